"""Helpers shared by the interop tests: waiting on conditions, names, and reading partitions
back with real clients using manual assignment (the broker has no consumer groups yet)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

#: Group id for librdkafka consumers: it insists on one, but we only ever `assign`, never
#: `subscribe` or commit, so no group coordinator is needed.
UNUSED_GROUP = "millrace-interop-assign-only"


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(
    condition: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.1,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll `condition` until it returns something truthy, and return that; fail after
    `timeout` seconds with `message` and the last value or exception seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = condition()
            if last:
                return last  # type: ignore[return-value]
        except Exception as exc:  # noqa: BLE001 - reported below if it never succeeds
            last = exc
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}; last: {last!r}")
        time.sleep(interval)


@dataclass(frozen=True)
class Record:
    """One record as read back from the broker, client-independent."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None


@dataclass
class ReadBack:
    records: list[Record] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def by_partition(self) -> dict[int, list[Record]]:
        out: dict[int, list[Record]] = {}
        for r in self.records:
            out.setdefault(r.partition, []).append(r)
        return out


# -- confluent-kafka -----------------------------------------------------------------------


def confluent_consumer(bootstrap: str, **extra):
    from confluent_kafka import Consumer

    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": UNUSED_GROUP,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    return Consumer(conf)


def confluent_read_all(
    bootstrap: str,
    topic: str,
    partitions: Iterable[int],
    timeout: float = 30.0,
    start_offsets: dict[int, int] | None = None,
    **consumer_conf,
) -> ReadBack:
    """Read every listed partition of `topic` from its beginning (or `start_offsets`) up to
    the high watermark observed before reading starts, with `assign` (no group)."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    partitions = list(partitions)
    consumer = confluent_consumer(bootstrap, **consumer_conf)
    try:
        highs = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        start = start_offsets or {}
        consumer.assign(
            [TopicPartition(topic, p, start.get(p, OFFSET_BEGINNING)) for p in partitions]
        )
        # The next offset to expect per partition; done when it reaches the high watermark.
        position = {p: None for p in partitions}
        out = ReadBack()

        def done() -> bool:
            return all(
                highs[p] == 0 or (position[p] is not None and position[p] >= highs[p])
                for p in partitions
            )

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"reading {topic} timed out after {timeout}s: high watermarks {highs}, "
                    f"reached {position}, errors {out.errors[-5:]}"
                )
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    p = msg.partition()
                    position[p] = max(position[p] or 0, msg.offset())
                    continue
                out.errors.append(str(err))
                if err.fatal():
                    raise AssertionError(f"fatal consumer error: {err}")
                continue
            p = msg.partition()
            headers = tuple((k, v) for k, v in (msg.headers() or []))
            out.records.append(
                Record(
                    partition=p,
                    offset=msg.offset(),
                    key=msg.key(),
                    value=msg.value(),
                    headers=headers,
                    timestamp=msg.timestamp()[1],
                )
            )
            position[p] = msg.offset() + 1
        return out
    finally:
        consumer.close()


def confluent_admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def confluent_create_topic(bootstrap: str, topic: str, partitions: int = 1, config=None) -> None:
    from confluent_kafka.admin import NewTopic

    admin = confluent_admin(bootstrap)
    futures = admin.create_topics(
        # -1: the broker's default.replication.factor (1 on one broker, 3 in the test cluster,
        # whose min.insync.replicas of 2 refuses acks=all writes to a single replica).
        [NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=config or {})],
        operation_timeout=15,
        request_timeout=15,
    )
    futures[topic].result(timeout=30)
    wait_for_partitions(admin, topic, partitions)


def topic_partition_count(admin, topic: str) -> int | None:
    """Partitions of `topic` in a full metadata listing (which never auto-creates), or None
    if the broker does not list it."""
    md = admin.list_topics(timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def wait_for_partitions(admin, topic: str, count: int, timeout: float = 15.0) -> None:
    wait_until(
        lambda: topic_partition_count(admin, topic) == count,
        timeout=timeout,
        message=f"{topic} to have {count} partitions in metadata",
    )


class DeliveryLog:
    """Collects confluent-kafka delivery reports."""

    def __init__(self) -> None:
        self.acked: list[tuple[int, int, bytes | None, bytes | None]] = []
        self.failed: list[tuple[str, bytes | None]] = []
        self.failed_codes: list[int] = []

    def __call__(self, err, msg) -> None:
        if err is not None:
            self.failed.append((str(err), msg.value()))
            self.failed_codes.append(err.code())
        else:
            self.acked.append((msg.partition(), msg.offset(), msg.key(), msg.value()))

    @property
    def done(self) -> int:
        return len(self.acked) + len(self.failed)


# -- kafka-python --------------------------------------------------------------------------


def kafka_python_read_all(
    bootstrap: str, topic: str, partitions: Iterable[int], timeout: float = 30.0
) -> ReadBack:
    """Read every listed partition from the beginning to the current end offset with
    KafkaConsumer(group_id=None) + assign + seek_to_beginning."""
    from kafka import KafkaConsumer, TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=20000,
    )
    try:
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        consumer.seek_to_beginning(*tps)
        out = ReadBack()
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"reading {topic} timed out after {timeout}s: end offsets {ends}, "
                    f"positions { {tp: consumer.position(tp) for tp in tps} }"
                )
            for tp, msgs in consumer.poll(timeout_ms=200).items():
                for m in msgs:
                    out.records.append(
                        Record(
                            partition=m.partition,
                            offset=m.offset,
                            key=m.key,
                            value=m.value,
                            headers=tuple((k, v) for k, v in (m.headers or [])),
                            timestamp=m.timestamp,
                        )
                    )
        return out
    finally:
        consumer.close()

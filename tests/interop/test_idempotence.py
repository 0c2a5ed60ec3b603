"""The idempotent producer against a real Millrace broker, through restarts and cut connections.

A confluent-kafka producer with `enable.idempotence=true` (acks=all, retries without limit
within `message.timeout.ms`, at most 5 requests in flight per partition) writes keyed records
whose value is a per-key sequence number, while

* the broker is restarted on the same port and data directory (SIGTERM, and kill -9), twice,
  at points decided from the delivery reports (not timers), with records still in flight; or
* its TCP connections are cut: the client talks to the broker through a small proxy in this
  test (the broker advertises the proxy's address), which several times first drops the
  broker's responses for a moment (so the broker has appended batches whose acknowledgement
  never arrives) and then aborts every proxied connection. The client must resend those
  batches with their original sequence numbers, and the broker must recognise them as
  duplicates and answer with their original offsets instead of writing them again.

Then: every record was acknowledged, the log holds each exactly once at the offset its
delivery report gave, and per key the sequence numbers are in order without gaps.
A kafka-python producer with `enable_idempotence=True` does one plain round trip.

The restart and cut-connection scenarios are single-broker (they restart the one broker, or
proxy its one advertised address); the kafka-python round trip also runs against a cluster.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import defaultdict, deque

import pytest
from confluent_kafka import Producer

from support import (
    DeliveryLog,
    confluent_create_topic,
    confluent_read_all,
    kafka_python_read_all,
    unique_topic,
    wait_until,
)

PARTITIONS = 3
KEYS = 24
TOTAL = 20_000
#: Produced but not yet reported at most: keeps records flowing while the disruption happens.
MAX_OUTSTANDING = 2_000
VALUE_PAD = "x" * 100


class RecentLog(logging.Handler):
    """Keeps librdkafka's last debug lines, for the message of a stalled test."""

    def __init__(self, lines: int = 200) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        # A partition without a leader is re-queried every few ms: keep the first of those
        # only, so the lines before (what led there) stay in view.
        if "re-query" in message and any("re-query" in line for line in self.lines):
            return
        self.lines.append(message)


def idempotent_producer(bootstrap: str, recent: RecentLog | None = None) -> Producer:
    extra: dict = {}
    if recent is not None:
        logger = logging.getLogger(f"rdkafka-{id(recent)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(recent)
        # Producer id, leader and connection changes: what a stall would be stuck in.
        extra = {"debug": "eos,topic,broker", "logger": logger}
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 2,
            "batch.num.messages": 200,  # many small batches, several in flight
            "message.timeout.ms": 100_000,
            "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "socket.timeout.ms": 10_000,
            **({"debug": extra["debug"]} if extra else {}),
        },
        **({"logger": extra["logger"]} if extra else {}),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def value_of(key: int, seq: int) -> bytes:
    return f"{key}:{seq:08d}:{VALUE_PAD}".encode()


def parse(value: bytes) -> tuple[int, int]:
    key, seq, _pad = value.decode().split(":", 2)
    return int(key), int(seq)


def produce_with_disruptions(
    bootstrap: str, topic: str, triggers: list[float], disrupt
) -> tuple[DeliveryLog, list[int]]:
    """Produce TOTAL records; when the acknowledged count first reaches each fraction in
    `triggers`, run `disrupt()` in a background thread (production continues meanwhile).
    Returns the delivery log and how many records were in flight at each disruption."""
    log = DeliveryLog()
    recent = RecentLog()
    p = idempotent_producer(bootstrap, recent)
    seqs = [0] * KEYS
    produced = 0
    pending = [int(f * TOTAL) for f in triggers]
    in_flight_at: list[int] = []
    worker: threading.Thread | None = None
    worker_error: list[BaseException] = []
    began = time.monotonic()
    # When each disruption started and ended, and the acknowledged count then: a stall
    # message says whether the producer or the disruption was stuck.
    timeline: list[str] = []

    def note(what: str) -> None:
        timeline.append(f"{what} at {time.monotonic() - began:.1f}s with {len(log.acked)} acked")

    def run_disruption() -> None:
        try:
            note("disruption began")
            disrupt()
            note("disruption ended")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            worker_error.append(exc)

    deadline = began + 100
    while log.done < TOTAL:
        assert not worker_error, f"disruption failed: {worker_error[0]!r}"
        assert time.monotonic() < deadline, (
            f"stalled: {len(log.acked)} acknowledged, {len(log.failed)} failed of {produced} "
            f"produced; failures {log.failed[:3]}; {'; '.join(timeline)}\n"
            "librdkafka's last lines:\n" + "\n".join(recent.lines)
        )
        # Disrupt only with records in flight: that is the case under test.
        if (pending and len(log.acked) >= pending[0] and produced > log.done
                and (worker is None or not worker.is_alive())):
            pending.pop(0)
            in_flight_at.append(produced - log.done)
            worker = threading.Thread(target=run_disruption, daemon=True)
            worker.start()
        if produced < TOTAL and produced - log.done < MAX_OUTSTANDING:
            key = produced % KEYS
            try:
                p.produce(topic, key=str(key).encode(), value=value_of(key, seqs[key]),
                          on_delivery=log)
            except BufferError:
                p.poll(0.05)
                continue
            seqs[key] += 1
            produced += 1
            p.poll(0)
        else:
            p.poll(0.05)
    assert p.flush(30) == 0
    if worker is not None:
        worker.join(60)
        assert not worker.is_alive(), "disruption thread hung"
    assert not worker_error, f"disruption failed: {worker_error[0]!r}"
    assert not pending, f"disruptions never triggered at acknowledged counts {pending}"
    return log, in_flight_at


def check_log(bootstrap: str, topic: str, log: DeliveryLog) -> None:
    assert not log.failed, (
        f"{len(log.failed)} records failed, e.g. {log.failed[:3]} (codes {set(log.failed_codes)})"
    )
    assert len(log.acked) == TOTAL

    back = confluent_read_all(bootstrap, topic, range(PARTITIONS), timeout=60)
    assert not back.errors, back.errors[:5]
    by_value = defaultdict(list)
    for r in back.records:
        by_value[r.value].append((r.partition, r.offset))
    dupes = {parse(v): locs for v, locs in by_value.items() if len(locs) > 1}
    assert not dupes, (
        f"{len(dupes)} records written more than once (key, seq) -> [(partition, offset)]: "
        f"{dict(list(dupes.items())[:10])}"
    )
    assert len(back.records) == TOTAL, (
        f"log holds {len(back.records)} records, {TOTAL} were acknowledged"
    )

    # Each record sits at the offset its delivery report gave.
    wrong = [
        (parse(value), (part, off), by_value.get(value))
        for part, off, _key, value in log.acked
        if by_value.get(value) != [(part, off)]
    ]
    assert not wrong, (
        f"{len(wrong)} delivery reports disagree with the log, e.g. (key, seq), reported, "
        f"in log: {wrong[:10]}"
    )

    # Per key: one partition, sequence numbers 0, 1, 2, ... in offset order.
    per_key: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for r in back.records:
        key, seq = parse(r.value)
        assert r.key == str(key).encode()
        per_key[key].append((r.partition, r.offset, seq))
    assert len(per_key) == KEYS
    for key, entries in per_key.items():
        assert len({part for part, _o, _s in entries}) == 1, f"key {key} on several partitions"
        entries.sort()
        seqs = [s for _p, _o, s in entries]
        assert seqs == list(range(len(seqs))), (
            f"key {key}: sequence out of order or with gaps at "
            f"{next(i for i, s in enumerate(seqs) if s != i)}: {seqs[:5]}..."
        )


@pytest.mark.parametrize("graceful", [True, False], ids=["sigterm", "kill9"])
def test_idempotent_producer_through_broker_restarts(broker_factory, graceful):
    broker = broker_factory()
    topic = unique_topic("idem-restart")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)

    def restart() -> None:
        broker.restart(graceful=graceful)

    log, in_flight = produce_with_disruptions(broker.bootstrap, topic, [1 / 3, 2 / 3], restart)
    assert broker.starts == 3, f"broker started {broker.starts} times, expected 1 + 2 restarts"
    assert all(n > 0 for n in in_flight), f"nothing in flight at a restart: {in_flight}"
    check_log(broker.bootstrap, topic, log)


PRODUCE_API_KEY = 0


class FrameSplitter:
    """Splits a Kafka byte stream into size-prefixed frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            size = int.from_bytes(self.buf[:4], "big", signed=True)
            if size < 0 or len(self.buf) < 4 + size:
                break
            frames.append(bytes(self.buf[: 4 + size]))
            del self.buf[: 4 + size]
        return frames


class ChaosProxy:
    """TCP proxy from a local port to the broker that can drop responses and abort every
    proxied connection on demand.

    It reads just enough of the protocol to know which API each response answers: requests
    start with api key (2 bytes), api version (2) and correlation id (4); responses with the
    correlation id. Responses are forwarded or dropped whole frames at a time."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs: list[list] = []  # [client, upstream, aborted, {correlation id: api key}]
        self.threads: list[threading.Thread] = []
        self.dropping = threading.Event()
        self.dropped_responses: dict[int, int] = defaultdict(int)  # api key -> count
        self.accepted = 0
        self.cuts = 0
        self.closed = False
        self.acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self.acceptor.start()

    def _accept_loop(self) -> None:
        while not self.closed:
            try:
                client, _addr = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                self._abort_socket(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = [client, upstream, False, {}]
            with self.lock:
                self.pairs.append(pair)
                self.accepted += 1
            for target in (self._pump_requests, self._pump_responses):
                t = threading.Thread(target=target, args=(pair,), daemon=True)
                self.threads.append(t)
                t.start()

    def _pump_requests(self, pair) -> None:
        client, upstream, _aborted, apis = pair
        frames = FrameSplitter()
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                for frame in frames.feed(data):
                    if len(frame) >= 12:
                        api_key = int.from_bytes(frame[4:6], "big")
                        apis[int.from_bytes(frame[8:12], "big", signed=True)] = api_key
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._abort(pair)

    def _pump_responses(self, pair) -> None:
        client, upstream, _aborted, apis = pair
        frames = FrameSplitter()
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                for frame in frames.feed(data):
                    corr = int.from_bytes(frame[4:8], "big", signed=True)
                    if self.dropping.is_set():
                        with self.lock:
                            self.dropped_responses[apis.get(corr, -1)] += 1
                        continue
                    client.sendall(frame)
        except OSError:
            pass
        finally:
            self._abort(pair)

    @staticmethod
    def _abort_socket(s: socket.socket) -> None:
        try:
            # RST instead of an orderly FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            s.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv
        except OSError:
            pass
        s.close()

    def _abort(self, pair) -> None:
        with self.lock:
            if pair[2]:
                return
            pair[2] = True
            if pair in self.pairs:
                self.pairs.remove(pair)
        self._abort_socket(pair[0])
        self._abort_socket(pair[1])

    def abort_all(self) -> None:
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._abort(pair)

    def cut(self) -> None:
        """Drop responses until at least one Produce response (a batch the broker appended)
        is lost, then abort every proxied connection."""
        before = self.dropped_responses[PRODUCE_API_KEY]
        self.dropping.set()
        try:
            wait_until(
                lambda: self.dropped_responses[PRODUCE_API_KEY] > before,
                timeout=10,
                interval=0.002,
                message="a Produce response to drop",
            )
        finally:
            self.abort_all()
            self.dropping.clear()
        self.cuts += 1

    def close(self) -> None:
        self.closed = True
        self.acceptor.join(5)
        self.listener.close()
        self.abort_all()
        for t in self.threads:
            t.join(5)


@pytest.fixture
def chaos_broker(broker_factory):
    broker_port = free_port()
    proxy = ChaosProxy(broker_port)
    try:
        broker = broker_factory(
            {"advertised.listeners": f"127.0.0.1:{proxy.port}"}, port=broker_port
        )
        yield broker, proxy
    finally:
        proxy.close()


def test_idempotent_producer_through_cut_connections(chaos_broker):
    broker, proxy = chaos_broker
    bootstrap = f"127.0.0.1:{proxy.port}"  # everything goes through the proxy
    topic = unique_topic("idem-cut")
    confluent_create_topic(bootstrap, topic, partitions=PARTITIONS)

    triggers = [0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9]
    log, in_flight = produce_with_disruptions(bootstrap, topic, triggers, proxy.cut)
    assert proxy.cuts == len(triggers)
    # Each cut lost at least one acknowledgement of an appended batch: the retries of those
    # batches are what the broker had to recognise as duplicates.
    assert proxy.dropped_responses[PRODUCE_API_KEY] >= len(triggers), proxy.dropped_responses
    assert proxy.accepted > len(triggers), (
        f"the client reconnected only {proxy.accepted} times for {len(triggers)} cuts"
    )
    assert all(n > 0 for n in in_flight), f"nothing in flight at a cut: {in_flight}"
    check_log(bootstrap, topic, log)


@pytest.mark.cluster
def test_kafka_python_idempotent_round_trip(broker):
    from kafka import KafkaProducer

    topic = unique_topic("idem-kp")
    confluent_create_topic(broker.bootstrap, topic, partitions=2)
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all", linger_ms=5
    )
    try:
        futures = [
            producer.send(topic, key=f"k{i % 4}".encode(), value=f"v{i}".encode())
            for i in range(40)
        ]
        producer.flush(30)
        sent = {}
        for i, fut in enumerate(futures):
            md = fut.get(timeout=30)
            sent[(md.partition, md.offset)] = f"v{i}".encode()
        # InitProducerId gave the producer an id (internal state; no public accessor).
        manager = getattr(producer, "_transaction_manager", None)
        if manager is not None:
            assert manager.producer_id_and_epoch.producer_id >= 0, "no producer id assigned"
    finally:
        producer.close()

    back = kafka_python_read_all(broker.bootstrap, topic, [0, 1])
    got = {(r.partition, r.offset): r.value for r in back.records}
    assert got == sent, "records read back differ from what the producer acknowledged"

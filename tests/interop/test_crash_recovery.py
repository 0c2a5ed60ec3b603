"""kill -9 the broker while a producer (acks=all) is writing; every acknowledged record must
survive the restart, exactly once, at the offset its delivery report gave, in order.

The producer has retries off, so a record is sent at most once: a record whose batch reached
the log but whose acknowledgement was lost may appear (unacknowledged), but nothing can appear
twice. The kill is triggered from the delivery-report state (half of the records acknowledged),
not from a timer.

Single-broker only (no `cluster` mark): the scenario is the loss of the only copy of the
log; in a cluster, kill -9 of a replica is a leader change, covered by tests/cluster_faults.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from support import DeliveryLog, confluent_create_topic, confluent_read_all, unique_topic

TOTAL = 20_000
PARTITIONS = 3
#: Records produced but not yet reported on, at most; keeps the producer writing while the
#: kill happens instead of having queued everything up front.
MAX_OUTSTANDING = 1_000
VALUE_PAD = "p" * 150


def crash_producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": False,
            "acks": "all",
            "retries": 0,  # never resend: each record reaches the log at most once
            "linger.ms": 2,
            "message.timeout.ms": 5000,
            "socket.timeout.ms": 5000,
            "reconnect.backoff.max.ms": 500,
        }
    )


def value_of(i: int) -> bytes:
    return f"{i:08d}:{VALUE_PAD}".encode()


def seq_of(value: bytes) -> int:
    return int(value.split(b":", 1)[0])


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {"flush.policy": "fsync", "log.segment.bytes": "1048576"}, id="fsync-small-segments"
        ),
        pytest.param({"flush.policy": "page-cache"}, id="page-cache"),
    ],
)
def test_acknowledged_records_survive_kill_9(broker_factory, overrides):
    broker = broker_factory(overrides)
    topic = unique_topic("crash")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)

    log = DeliveryLog()
    p = crash_producer(broker.bootstrap)
    in_flight_at_kill = None
    produced = 0
    deadline = time.monotonic() + 90
    while produced < TOTAL:
        assert time.monotonic() < deadline, f"producing stalled: {log.done} of {produced} reported"
        if len(log.acked) >= TOTAL // 2:
            # Kill mid-stream, with up to MAX_OUTSTANDING records still in flight, and stop
            # producing: the in-flight records are the ones the crash can catch.
            in_flight_at_kill = produced - log.done
            broker.kill9()
            break
        if produced - log.done >= MAX_OUTSTANDING:
            p.poll(0.01)
            continue
        try:
            p.produce(topic, value=value_of(produced), partition=produced % PARTITIONS,
                      on_delivery=log)
        except BufferError:
            p.poll(0.05)
            continue
        produced += 1
        p.poll(0)
    assert in_flight_at_kill is not None, (
        f"the broker was never killed: only {len(log.acked)} of {produced} acknowledged; "
        f"failures: {log.failed[:3]}"
    )
    assert p.flush(60) == 0, "every record gets a delivery report (ack or failure)"
    assert log.done == produced
    print(
        f"killed with {in_flight_at_kill} records in flight; {len(log.acked)} acknowledged, "
        f"{len(log.failed)} failed"
    )
    del p

    broker.restart()
    acked = {(part, off): value for part, off, _, value in log.acked}
    assert len(acked) == len(log.acked), "two acknowledgements for the same offset"

    back = confluent_read_all(broker.bootstrap, topic, range(PARTITIONS), timeout=60)
    stored = {(r.partition, r.offset): r.value for r in back.records}
    missing = [(po, v[:8]) for po, v in sorted(acked.items()) if stored.get(po) != v]
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged records missing or changed after kill -9, "
        f"first: {missing[:5]} (stored there: {[stored.get(po, b'')[:8] for po, _ in missing[:5]]})"
    )
    counts = Counter(r.value for r in back.records)
    dupes = [v[:8] for v, c in counts.items() if c > 1]
    assert not dupes, f"records stored more than once: {dupes[:5]}"
    for part, records in back.by_partition().items():
        assert [r.offset for r in records] == list(range(len(records))), (
            f"partition {part}: offsets not dense from 0 after recovery"
        )
        seqs = [seq_of(r.value) for r in records]
        assert seqs == sorted(seqs), f"partition {part}: records out of order after recovery"
        assert all(s % PARTITIONS == part for s in seqs), f"partition {part}: foreign record"

    # Writes after the restart continue right after the recovered end of each partition.
    ends = {part: len(back.by_partition().get(part, [])) for part in range(PARTITIONS)}
    log2 = DeliveryLog()
    p2 = crash_producer(broker.bootstrap)
    for part in range(PARTITIONS):
        for j in range(10):
            p2.produce(topic, value=f"after-{part}-{j}".encode(), partition=part,
                       on_delivery=log2)
    assert p2.flush(30) == 0
    assert log2.failed == []
    for part in range(PARTITIONS):
        offsets = [off for pa, off, _, _ in log2.acked if pa == part]
        assert offsets == list(range(ends[part], ends[part] + 10)), f"partition {part}"

    after = confluent_read_all(broker.bootstrap, topic, range(PARTITIONS), timeout=60)
    for part, records in after.by_partition().items():
        assert [r.offset for r in records] == list(range(ends[part] + 10))
        assert [r.value for r in records[ends[part]:]] == [
            f"after-{part}-{j}".encode() for j in range(10)
        ]

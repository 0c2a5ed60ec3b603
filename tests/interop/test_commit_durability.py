"""Committed offsets survive `kill -9` of the broker.

A group member commits synchronously (the broker answers only once the commit is fsynced into
`__consumer_offsets`), the broker is killed with SIGKILL and restarted on the same port and data
directory, and then: `committed()` returns exactly the committed offsets, and a new member of
the group resumes at exactly them (no gap, no repeat). The same for a "simple" consumer that
only assigns and commits (no group membership, generation -1), and for a group whose later
commit overwrote an earlier one (the latest wins after replay).

Single-broker only (no `cluster` mark): it kills and restarts the one broker on its data
directory; brokers of a cluster killed and restarted are covered by tests/cluster_faults.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from support import DeliveryLog, confluent_create_topic, unique_topic

PARTITIONS = 4


def produce(bootstrap: str, topic: str, count: int) -> dict[int, int]:
    """Round-robin over the partitions; returns the high watermark per partition."""
    log = DeliveryLog()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        p.produce(topic, value=f"v{i}".encode(), partition=i % PARTITIONS, on_delivery=log)
    assert p.flush(30) == 0
    assert not log.failed, log.failed[:5]
    hw = {q: 0 for q in range(PARTITIONS)}
    for part, off, _k, _v in log.acked:
        hw[part] = max(hw[part], off + 1)
    return hw


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": 6000,
            "socket.timeout.ms": 10000,
            "reconnect.backoff.max.ms": 500,
        }
    )


def commit(c: Consumer, topic: str, offsets: dict[int, int]) -> None:
    result = c.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in sorted(offsets.items())],
        asynchronous=False,
    )
    assert all(tp.error is None for tp in result), f"commit errors: {result}"


def committed(c: Consumer, topic: str) -> dict[int, int]:
    tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=20)
    for tp in tps:
        assert tp.error is None, f"committed() error for {tp}"
    return {tp.partition: tp.offset for tp in tps if tp.offset >= 0}


def read_group(bootstrap: str, group: str, topic: str, hw: dict[int, int]) -> dict[int, list[int]]:
    """Subscribe as a new member and read every partition to its high watermark; returns the
    offsets read per partition."""
    c = consumer(bootstrap, group)
    reads: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    eof: dict[int, int] = {}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 40
        while not all(eof.get(p) == hw[p] for p in range(PARTITIONS)):
            assert time.monotonic() < deadline, f"new member stuck: eof {eof}, hw {hw}"
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof[msg.partition()] = msg.offset()
                    continue
                raise AssertionError(f"consumer error: {msg.error()}")
            reads[msg.partition()].append(msg.offset())
            eof.pop(msg.partition(), None)
    finally:
        c.close()
    return reads


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"offsets.topic.num.partitions": "3"}, id="3-offsets-partitions"),
    ],
)
def test_committed_offsets_survive_kill_9(broker_factory, overrides):
    broker = broker_factory({"group.initial.rebalance.delay.ms": "300", **overrides})
    topic = unique_topic("durable")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    hw = produce(broker.bootstrap, topic, 400)  # 100 per partition
    group = unique_topic("g")
    overwritten_group = unique_topic("g-over")
    simple_group = unique_topic("g-simple")

    # A group member consumes and commits a different position on each partition (one
    # partition stays uncommitted).
    member = consumer(broker.bootstrap, group)
    try:
        member.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(member.assignment()) < PARTITIONS:
            assert time.monotonic() < deadline, "member never got its assignment"
            member.poll(0.1)
        commit(member, topic, {0: 17, 1: 42, 2: 100})
    finally:
        member.close()
    expected = {0: 17, 1: 42, 2: 100}

    # Another group commits twice; the second commit must win after the restart.
    over = consumer(broker.bootstrap, overwritten_group)
    try:
        over.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(over.assignment()) < PARTITIONS:
            assert time.monotonic() < deadline, "member never got its assignment"
            over.poll(0.1)
        commit(over, topic, {p: 10 for p in range(PARTITIONS)})
        commit(over, topic, {0: 11, 1: 12, 2: 13, 3: 14})
    finally:
        over.close()

    # A simple consumer: assign, no membership, commit with generation -1.
    simple = consumer(broker.bootstrap, simple_group)
    try:
        simple.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        commit(simple, topic, {1: 5, 3: 99})
    finally:
        simple.close()

    broker.kill9()
    broker.start()

    c = consumer(broker.bootstrap, group)
    try:
        assert committed(c, topic) == expected, "committed offsets changed across kill -9"
    finally:
        c.close()
    c = consumer(broker.bootstrap, overwritten_group)
    try:
        assert committed(c, topic) == {0: 11, 1: 12, 2: 13, 3: 14}, "latest commit lost"
    finally:
        c.close()
    c = consumer(broker.bootstrap, simple_group)
    try:
        assert committed(c, topic) == {1: 5, 3: 99}, "simple consumer's commit lost"
    finally:
        c.close()

    reads = read_group(broker.bootstrap, group, topic, hw)
    for p in range(PARTITIONS):
        start = expected.get(p, 0)  # uncommitted partition: auto.offset.reset=earliest
        assert reads[p] == list(range(start, hw[p])), (
            f"partition {p}: resumed at {reads[p][:1]} (read {len(reads[p])}), expected "
            f"{start}..{hw[p] - 1}"
        )

    # A second crash right after a commit made by the restarted broker.
    c = consumer(broker.bootstrap, group)
    try:
        c.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        commit(c, topic, {3: 77})
    finally:
        c.close()
    broker.kill9()
    broker.start()
    c = consumer(broker.bootstrap, group)
    try:
        assert committed(c, topic) == {**expected, 3: 77}
    finally:
        c.close()

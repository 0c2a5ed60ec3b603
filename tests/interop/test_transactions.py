"""Transactions with librdkafka (confluent-kafka) against a real Millrace broker.

A transactional producer (`transactional.id`) and read_committed consumers: committed
records are read once, aborted ones never (but by read_uncommitted consumers), a second
producer with the same transactional id fences the first and aborts its open transaction,
`send_offsets_to_transaction` makes a consume-transform-produce loop exact, and a transaction
whose producer died is aborted after its `transaction.timeout.ms`, so the last stable offset
moves on. Every test runs against one broker and against a three-broker cluster (where the
transaction coordinator, `__transaction_state`'s leader, and the partition leaders are often
different brokers).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from support import confluent_create_topic, confluent_read_all, unique_topic, wait_until

pytestmark = pytest.mark.cluster


def txn_producer(bootstrap: str, transactional_id: str, **extra) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": transactional_id,
        "linger.ms": 5,
        "socket.timeout.ms": 20_000,
        "transaction.timeout.ms": 60_000,
    }
    conf.update(extra)
    producer = Producer(conf)
    producer.init_transactions(30)
    return producer


def values(readback) -> list[bytes]:
    return [r.value for r in readback.records]


def read_committed(bootstrap: str, topic: str, partitions=(0,)):
    return confluent_read_all(bootstrap, topic, partitions, **{"isolation.level": "read_committed"})


def read_uncommitted(bootstrap: str, topic: str, partitions=(0,)):
    return confluent_read_all(
        bootstrap, topic, partitions, **{"isolation.level": "read_uncommitted"}
    )


def in_transaction(producer: Producer, topic: str, vals: list[bytes], partition: int = 0) -> None:
    producer.begin_transaction()
    for v in vals:
        producer.produce(topic, value=v, partition=partition)
    producer.flush(30)


def test_committed_transactions_are_read_once_across_partitions(broker):
    topic = unique_topic("txn-commit")
    confluent_create_topic(broker.bootstrap, topic, partitions=3)
    producer = txn_producer(broker.bootstrap, unique_topic("tid"))
    expected = []
    for t in range(3):
        producer.begin_transaction()
        for i in range(30):
            v = f"{t}-{i}".encode()
            producer.produce(topic, value=v, partition=i % 3)
            expected.append(v)
        producer.commit_transaction(30)
    got = read_committed(broker.bootstrap, topic, range(3))
    assert sorted(values(got)) == sorted(expected)


def test_aborted_records_are_invisible_to_read_committed_only(broker):
    topic = unique_topic("txn-abort")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    producer = txn_producer(broker.bootstrap, unique_topic("tid"))
    committed_a = [f"a{i}".encode() for i in range(5)]
    aborted = [f"b{i}".encode() for i in range(5)]
    committed_c = [f"c{i}".encode() for i in range(5)]
    in_transaction(producer, topic, committed_a)
    producer.commit_transaction(30)
    in_transaction(producer, topic, aborted)
    producer.abort_transaction(30)
    in_transaction(producer, topic, committed_c)
    producer.commit_transaction(30)

    assert values(read_committed(broker.bootstrap, topic)) == committed_a + committed_c
    assert values(read_uncommitted(broker.bootstrap, topic)) == committed_a + aborted + committed_c


def test_open_transaction_holds_back_read_committed_consumers(broker):
    topic = unique_topic("txn-lso")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    producer = txn_producer(broker.bootstrap, unique_topic("tid"))
    in_transaction(producer, topic, [b"open-1", b"open-2"])
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": unique_topic("g"),
            "isolation.level": "read_committed",
        }
    )
    try:
        tp = TopicPartition(topic, 0)
        # The last stable offset stays at the open transaction's first record, 0.
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        assert high == 0
        producer.commit_transaction(30)
        wait_until(
            lambda: consumer.get_watermark_offsets(tp, timeout=10)[1] == 3,
            message="the last stable offset past the commit marker",
        )
    finally:
        consumer.close()


def test_second_producer_with_the_same_id_fences_the_zombie(broker):
    topic = unique_topic("txn-zombie")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    tid = unique_topic("tid")
    zombie = txn_producer(broker.bootstrap, tid)
    in_transaction(zombie, topic, [b"zombie-1", b"zombie-2"])

    successor = txn_producer(broker.bootstrap, tid)
    in_transaction(successor, topic, [b"successor"])
    successor.commit_transaction(30)

    with pytest.raises(KafkaException) as fenced:
        zombie.produce(topic, value=b"zombie-late", partition=0)
        zombie.flush(10)
        zombie.commit_transaction(10)
    assert fenced.value.args[0].fatal() or "fenced" in str(fenced.value).lower()
    assert values(read_committed(broker.bootstrap, topic)) == [b"successor"]


def test_send_offsets_makes_consume_transform_produce_exact(broker):
    source = unique_topic("txn-in")
    sink = unique_topic("txn-out")
    confluent_create_topic(broker.bootstrap, source, partitions=2)
    confluent_create_topic(broker.bootstrap, sink, partitions=2)
    group = unique_topic("txn-group")
    inputs = [f"{i}".encode() for i in range(200)]
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i, v in enumerate(inputs):
        plain.produce(source, value=v, partition=i % 2)
    plain.flush(30)

    def run(limit_batches: int | None, abort_last: bool = False) -> int:
        """One instance of the job: consume, transform, produce and commit the offsets in one
        transaction per batch; returns how many records it processed."""
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": group,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        producer = txn_producer(broker.bootstrap, f"{group}-job")
        consumer.subscribe([source])
        processed = 0
        batches = 0
        idle_since = time.monotonic()
        try:
            while time.monotonic() - idle_since < 5:
                msgs = consumer.consume(num_messages=37, timeout=0.5)
                msgs = [m for m in msgs if m.error() is None]
                if not msgs:
                    continue
                idle_since = time.monotonic()
                producer.begin_transaction()
                for m in msgs:
                    producer.produce(sink, value=b"x" + m.value(), partition=m.partition())
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()),
                    consumer.consumer_group_metadata(),
                    30,
                )
                batches += 1
                if abort_last and limit_batches is not None and batches == limit_batches:
                    producer.abort_transaction(30)
                    return processed
                producer.commit_transaction(30)
                processed += len(msgs)
                if limit_batches is not None and batches >= limit_batches:
                    return processed
            return processed
        finally:
            consumer.close()

    # A first instance commits two batches, then aborts its third: those records are
    # consumed again by the second instance, and their aborted output is never read.
    first = run(limit_batches=3, abort_last=True)
    second = run(limit_batches=None)
    assert first + second == len(inputs)
    got = read_committed(broker.bootstrap, sink, range(2))
    assert sorted(values(got)) == sorted(b"x" + v for v in inputs)


def test_read_committed_consumer_waits_for_offsets_an_open_transaction_writes(broker):
    """KIP-447: librdkafka's read_committed consumer fetches committed offsets with
    require_stable. While an open transaction writes a group's offset, the broker answers
    UNSTABLE_OFFSET_COMMIT, so that consumer never starts before the transaction; a
    read_uncommitted one gets the offset from before it."""
    topic = unique_topic("txn-stable")
    group = unique_topic("txn-stable-group")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    tp = TopicPartition(topic, 0)

    def consumer(level: str) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": group,
                "isolation.level": level,
                "enable.auto.commit": False,
            }
        )

    member = consumer("read_committed")
    producer = txn_producer(broker.bootstrap, f"{group}-tx")
    producer.begin_transaction()
    producer.send_offsets_to_transaction(
        [TopicPartition(topic, 0, 7)], member.consumer_group_metadata(), 30
    )

    uncommitted = consumer("read_uncommitted")
    before = uncommitted.committed([tp], timeout=10)[0]
    assert before.error is None and before.offset < 0, before

    waiting = consumer("read_committed")
    try:
        answer = waiting.committed([tp], timeout=2)[0]
        # No exception: the partition must carry the refusal, not an offset.
        assert answer.error is not None, f"got {answer.offset} while the transaction was open"
    except KafkaException:
        pass  # librdkafka retried UNSTABLE_OFFSET_COMMIT until the timeout

    producer.commit_transaction(30)
    after = waiting.committed([tp], timeout=10)[0]
    assert after.error is None and after.offset == 7, after
    for c in (member, uncommitted, waiting):
        c.close()


HANGING_PRODUCER = textwrap.dedent(
    """
    import os, sys
    from confluent_kafka import Producer
    bootstrap, topic, tid = sys.argv[1:4]
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid,
                  "transaction.timeout.ms": 4000})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, value=b"hanging-%d" % i, partition=0)
    p.flush(30)
    print("produced", flush=True)
    os._exit(0)  # dies mid-transaction: no commit, no abort
    """
)


def test_transaction_of_a_dead_producer_is_aborted_after_its_timeout(broker):
    topic = unique_topic("txn-hang")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    out = subprocess.run(
        [sys.executable, "-c", HANGING_PRODUCER, broker.bootstrap, topic, unique_topic("tid")],
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert "produced" in out.stdout, out.stderr
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": unique_topic("g"),
            "isolation.level": "read_committed",
        }
    )
    try:
        tp = TopicPartition(topic, 0)
        assert consumer.get_watermark_offsets(tp, timeout=10)[1] == 0
        # Timeout 4 s, cleanup every 10 s: the abort marker (offset 3) lands within ~15 s.
        wait_until(
            lambda: consumer.get_watermark_offsets(tp, timeout=10)[1] == 4,
            timeout=40,
            interval=0.5,
            message="the last stable offset past the abort marker",
        )
    finally:
        consumer.close()
    assert values(read_committed(broker.bootstrap, topic)) == []
    assert len(values(read_uncommitted(broker.bootstrap, topic))) == 3

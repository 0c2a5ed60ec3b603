"""kafka-python (pure Python, its own protocol code) against a real Millrace broker.

Consumers use KafkaConsumer(group_id=None) with assign/seek (no consumer groups yet); the
producer sets enable_idempotence=False (no InitProducerId yet).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.codec import has_lz4, has_snappy, has_zstd

from support import kafka_python_read_all, unique_topic, wait_until

# Every test here runs against one broker and against a three-broker cluster.
pytestmark = pytest.mark.cluster


def admin_client(bootstrap: str) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = admin_client(bootstrap)
    try:
        # -1: the broker's default replication factor (3 in the test cluster).
        admin.create_topics({topic: {"num_partitions": partitions, "replication_factor": -1}})
        wait_until(lambda: topic in admin.list_topics(), message=f"{topic} listed")
    finally:
        admin.close()


def producer(bootstrap: str, **extra) -> KafkaProducer:
    conf = dict(
        bootstrap_servers=bootstrap,
        enable_idempotence=False,
        acks="all",
        linger_ms=5,
        request_timeout_ms=20000,
    )
    conf.update(extra)
    return KafkaProducer(**conf)


def consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=20000,
    )


def test_admin_creates_and_deletes_topics(broker):
    admin = admin_client(broker.bootstrap)
    try:
        topics = [unique_topic("kp-admin") for _ in range(2)]
        admin.create_topics({t: {"num_partitions": 3, "replication_factor": -1} for t in topics})
        wait_until(lambda: set(topics) <= set(admin.list_topics()), message="both topics")
        described = {d["name"]: d for d in admin.describe_topics(topics)}
        nodes = sorted(b.node_id for b in broker.brokers)
        for t in topics:
            assert described[t]["error_code"] == 0
            parts = sorted(described[t]["partitions"], key=lambda p: p["partition_index"])
            assert [p["partition_index"] for p in parts] == [0, 1, 2]
            for p in parts:
                assert sorted(p["replica_nodes"]) == nodes, p
                assert sorted(p["isr_nodes"]) == nodes, p
                assert p["leader_id"] in nodes, p

        admin.delete_topics([topics[0]])
        wait_until(
            lambda: topics[0] not in admin.list_topics(), message=f"{topics[0]} deleted"
        )
        assert topics[1] in admin.list_topics()
    finally:
        admin.close()


CODECS = [
    pytest.param(None, id="none"),
    pytest.param("gzip", id="gzip"),
    pytest.param(
        "snappy", id="snappy",
        marks=pytest.mark.skipif(not has_snappy(), reason="python-snappy not installed"),
    ),
    pytest.param(
        "lz4", id="lz4", marks=pytest.mark.skipif(not has_lz4(), reason="lz4 not installed")
    ),
    pytest.param(
        "zstd", id="zstd",
        marks=pytest.mark.skipif(not has_zstd(), reason="zstandard not installed"),
    ),
]


@pytest.mark.parametrize("codec", CODECS)
def test_keyed_produce_with_headers_and_compression_round_trips(broker, codec):
    topic = unique_topic(f"kp-{codec or 'none'}")
    create_topic(broker.bootstrap, topic, partitions=3)
    p = producer(broker.bootstrap, compression_type=codec, linger_ms=20)
    sent = []
    futures = []
    for i in range(300):
        key = f"key-{i % 11}".encode()
        value = (f"kafka-python {codec} {i} " + "xyz" * (i % 40)).encode()
        headers = [("seq", str(i).encode()), ("codec", str(codec).encode())]
        sent.append((key, value, headers))
        futures.append(p.send(topic, key=key, value=value, headers=headers))
    p.flush(timeout=30)
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)

    back = kafka_python_read_all(broker.bootstrap, topic, range(3))
    assert len(back.records) == len(sent)
    by_value = {r.value: r for r in back.records}
    assert Counter(r.value for r in back.records) == Counter(v for _, v, _ in sent)
    partitions_of_key = defaultdict(set)
    for (key, value, headers), meta in zip(sent, metas):
        r = by_value[value]
        assert r.key == key
        assert list(r.headers) == headers
        assert (r.partition, r.offset) == (meta.partition, meta.offset)
        partitions_of_key[key].add(r.partition)
    assert all(len(ps) == 1 for ps in partitions_of_key.values())
    for part, records in back.by_partition().items():
        seqs = [int(dict(r.headers)["seq"]) for r in records]
        assert seqs == sorted(seqs), f"partition {part} out of order"
        assert [r.offset for r in records] == list(range(len(records)))


def test_offsets_for_times(broker):
    topic = unique_topic("kp-times")
    create_topic(broker.bootstrap, topic, partitions=1)
    base = int(time.time() * 1000) - 7_200_000
    p = producer(broker.bootstrap, linger_ms=0)
    for i in range(8):
        p.send(topic, value=f"t{i}".encode(), partition=0, timestamp_ms=base + i * 10_000)
        p.flush(timeout=30)
    p.close(timeout=10)

    c = consumer(broker.bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        found = c.offsets_for_times({tp: base + 25_000})[tp]
        assert found is not None
        assert (found.offset, found.timestamp) == (3, base + 30_000)
        assert c.offsets_for_times({tp: base - 1})[tp].offset == 0
        assert c.offsets_for_times({tp: base + 1_000_000})[tp] is None
    finally:
        c.close()


def test_beginning_and_end_offsets_follow_writes_and_delete_records(broker):
    topic = unique_topic("kp-offsets")
    create_topic(broker.bootstrap, topic, partitions=2)
    p = producer(broker.bootstrap)
    for i in range(7):
        p.send(topic, value=f"a{i}".encode(), partition=0)
    for i in range(3):
        p.send(topic, value=f"b{i}".encode(), partition=1)
    p.flush(timeout=30)
    p.close(timeout=10)

    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    c = consumer(broker.bootstrap)
    try:
        assert c.beginning_offsets([tp0, tp1]) == {tp0: 0, tp1: 0}
        assert c.end_offsets([tp0, tp1]) == {tp0: 7, tp1: 3}

        admin = admin_client(broker.bootstrap)
        try:
            admin.delete_records({tp0: 5})
        finally:
            admin.close()
        assert c.beginning_offsets([tp0, tp1]) == {tp0: 5, tp1: 0}
        assert c.end_offsets([tp0]) == {tp0: 7}

        c.assign([tp0])
        c.seek_to_beginning(tp0)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=200).values():
                got += [(m.offset, m.value) for m in msgs]
        assert got == [(5, b"a5"), (6, b"a6")]
    finally:
        c.close()

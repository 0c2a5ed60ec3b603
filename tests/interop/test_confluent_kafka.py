"""librdkafka (through confluent-kafka) against a real Millrace broker.

Consumers use `assign` with explicit offsets (no consumer groups yet) and producers disable
idempotence (no InitProducerId yet).
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from support import (
    DeliveryLog,
    confluent_admin,
    confluent_consumer,
    confluent_create_topic,
    confluent_read_all,
    topic_partition_count,
    unique_topic,
    wait_for_partitions,
    wait_until,
)

# Every test here runs against one broker and against a three-broker cluster.
pytestmark = pytest.mark.cluster

try:
    from confluent_kafka import TopicCollection
except ImportError:  # older confluent-kafka
    TopicCollection = None


def producer(bootstrap: str, **extra) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "socket.timeout.ms": 10000,
    }
    conf.update(extra)
    return Producer(conf)


def flush_all(p: Producer, log: DeliveryLog, expected: int, timeout: float = 60) -> None:
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {timeout}s"
    assert log.failed == [], f"delivery failures: {log.failed[:5]}"
    assert len(log.acked) == expected


# -- admin ---------------------------------------------------------------------------------


def test_create_topic_shows_partitions_replicated_on_every_broker(broker):
    admin = confluent_admin(broker.bootstrap)
    topic = unique_topic("admin")
    futures = admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=-1)])
    assert futures[topic].result(timeout=30) is None

    wait_for_partitions(admin, topic, 6)
    md = admin.list_topics(timeout=10)
    nodes = sorted(b.node_id for b in broker.brokers)
    assert sorted(md.brokers) == nodes
    for node in nodes:
        assert md.brokers[node].host == "127.0.0.1"
        assert md.brokers[node].port == broker.port_of(node)
    t = md.topics[topic]
    assert t.error is None
    assert sorted(t.partitions) == list(range(6))
    for pid, part in t.partitions.items():
        assert part.error is None, f"partition {pid}: {part.error}"
        # Replication factor -1 means the broker default: every broker of the test setups.
        assert sorted(part.replicas) == nodes, f"partition {pid} replicas {part.replicas}"
        assert sorted(part.isrs) == nodes, f"partition {pid} ISR {part.isrs}"
        assert part.leader in part.replicas, f"partition {pid} leader {part.leader}"
    leaders = {part.leader for part in t.partitions.values()}
    assert leaders == set(nodes), f"leadership of 6 partitions not spread: {leaders}"


def test_create_existing_topic_fails_with_topic_already_exists(broker):
    admin = confluent_admin(broker.bootstrap)
    topic = unique_topic("dup")
    admin.create_topics([NewTopic(topic, 2, -1)])[topic].result(timeout=30)
    with pytest.raises(KafkaException) as exc:
        admin.create_topics([NewTopic(topic, 2, -1)])[topic].result(timeout=30)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


@pytest.mark.skipif(TopicCollection is None, reason="describe_topics needs confluent-kafka >= 2.3")
def test_describe_topics_reports_partitions(broker):
    admin = confluent_admin(broker.bootstrap)
    topic = unique_topic("describe")
    confluent_create_topic(broker.bootstrap, topic, partitions=6)
    desc = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)
    assert desc.name == topic
    assert [p.id for p in desc.partitions] == list(range(6))
    nodes = sorted(b.node_id for b in broker.brokers)
    for p in desc.partitions:
        assert sorted(r.id for r in p.replicas) == nodes
        assert p.leader.id in nodes
        assert sorted(r.id for r in p.isr) == nodes


def test_describe_configs_returns_topic_settings(broker):
    admin = confluent_admin(broker.bootstrap)
    topic = unique_topic("configs")
    confluent_create_topic(broker.bootstrap, topic, partitions=1, config={"retention.ms": "3600000"})

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"


def test_incremental_alter_configs_changes_a_topic_setting(broker):
    admin = confluent_admin(broker.bootstrap)
    topic = unique_topic("alter")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)

    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    plain = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([plain])[plain].result(timeout=30)
    assert configs["retention.ms"].value == "7200000"


def test_describe_cluster_lists_every_broker(broker):
    admin = confluent_admin(broker.bootstrap)
    cluster = admin.describe_cluster(request_timeout=15).result(timeout=30)
    nodes = sorted(b.node_id for b in broker.brokers)
    assert sorted(n.id for n in cluster.nodes) == nodes
    for n in cluster.nodes:
        assert (n.host, n.port) == ("127.0.0.1", broker.port_of(n.id))
    assert cluster.controller is not None and cluster.controller.id in nodes


def test_delete_topic_removes_it_from_metadata(broker):
    admin = confluent_admin(broker.bootstrap)
    topic = unique_topic("delete")
    confluent_create_topic(broker.bootstrap, topic, partitions=3)
    assert admin.delete_topics([topic])[topic].result(timeout=30) is None
    wait_until(
        lambda: topic_partition_count(admin, topic) is None,
        message=f"{topic} to disappear from metadata",
    )


def test_create_partitions_increases_partition_count(broker):
    admin = confluent_admin(broker.bootstrap)
    topic = unique_topic("grow")
    confluent_create_topic(broker.bootstrap, topic, partitions=2)

    assert admin.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=30) is None
    wait_for_partitions(admin, topic, 5)

    # The new partitions take writes and serve them back.
    log = DeliveryLog()
    p = producer(broker.bootstrap, **{"topic.metadata.refresh.interval.ms": 500})
    wait_until(
        lambda: len(p.list_topics(topic, timeout=10).topics[topic].partitions) == 5,
        message="producer to see 5 partitions",
    )
    for part in range(5):
        p.produce(topic, value=f"to-{part}".encode(), partition=part, on_delivery=log)
    flush_all(p, log, 5)
    assert sorted((part, off) for part, off, _, _ in log.acked) == [(i, 0) for i in range(5)]
    back = confluent_read_all(broker.bootstrap, topic, range(5))
    assert sorted((r.partition, r.value) for r in back.records) == [
        (i, f"to-{i}".encode()) for i in range(5)
    ]


# -- produce and consume -------------------------------------------------------------------


def test_keyed_produce_with_headers_round_trips_across_partitions(broker):
    topic = unique_topic("keyed")
    confluent_create_topic(broker.bootstrap, topic, partitions=6)
    n, keys = 600, 37
    log = DeliveryLog()
    p = producer(broker.bootstrap)
    sent = {}
    for i in range(n):
        key = f"key-{i % keys}".encode()
        value = f"value-{i}".encode()
        headers = [("seq", str(i).encode()), ("dup", b"first"), ("dup", b"second"), ("empty", b"")]
        sent[value] = (key, headers)
        p.produce(topic, key=key, value=value, headers=headers, on_delivery=log)
        p.poll(0)
    flush_all(p, log, n)
    acked = {value: (part, off) for part, off, _, value in log.acked}

    back = confluent_read_all(broker.bootstrap, topic, range(6))
    values = [r.value for r in back.records]
    assert len(values) == n, f"read {len(values)} records, expected {n}"
    assert Counter(values) == Counter(list(sent)), "every record exactly once"

    partition_of_key = defaultdict(set)
    for r in back.records:
        key, headers = sent[r.value]
        assert r.key == key
        assert list(r.headers) == headers, f"headers of {r.value!r}"
        assert (r.partition, r.offset) == acked[r.value], "read where the delivery report said"
        partition_of_key[r.key].add(r.partition)
    assert all(len(ps) == 1 for ps in partition_of_key.values()), "a key moved partitions"
    assert len({r.partition for r in back.records}) > 1, "keys should spread over partitions"

    for part, records in back.by_partition().items():
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records))), f"partition {part} offsets not dense"
        seqs = [int(dict(r.headers)["seq"]) for r in records]
        assert seqs == sorted(seqs), f"partition {part} out of production order"


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_compression_codec_round_trips(broker, codec):
    topic = unique_topic(f"codec-{codec}")
    confluent_create_topic(broker.bootstrap, topic, partitions=2)
    log = DeliveryLog()
    p = producer(broker.bootstrap, **{"compression.type": codec, "linger.ms": 50})
    values = [(f"{codec} record {i} " + "abcdefgh" * (i % 50)).encode() for i in range(500)]
    for i, v in enumerate(values):
        p.produce(topic, key=f"k{i % 7}".encode(), value=v, headers=[("i", str(i).encode())],
                  on_delivery=log)
        p.poll(0)
    flush_all(p, log, len(values))

    back = confluent_read_all(broker.bootstrap, topic, range(2))
    assert Counter(r.value for r in back.records) == Counter(values)
    for r in back.records:
        assert r.value == values[int(dict(r.headers)["i"])]
    for part, records in back.by_partition().items():
        assert [r.offset for r in records] == list(range(len(records)))


def test_900_kb_record_round_trips(broker):
    topic = unique_topic("large")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    big = os.urandom(900 * 1024)
    log = DeliveryLog()
    p = producer(broker.bootstrap, **{"message.max.bytes": 2_000_000})
    p.produce(topic, key=b"big", value=big, on_delivery=log)
    p.produce(topic, key=b"small", value=b"after the big one", on_delivery=log)
    flush_all(p, log, 2)

    back = confluent_read_all(
        broker.bootstrap,
        topic,
        [0],
        **{"fetch.message.max.bytes": 2_000_000},
    )
    assert [(r.offset, r.key) for r in back.records] == [(0, b"big"), (1, b"small")]
    assert back.records[0].value == big
    assert back.records[1].value == b"after the big one"


def test_offsets_for_times_finds_first_offset_at_or_after_timestamp(broker):
    topic = unique_topic("times")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    base = int(time.time() * 1000) - 3_600_000
    log = DeliveryLog()
    p = producer(broker.bootstrap, **{"linger.ms": 0})
    for i in range(10):
        p.produce(topic, value=f"at-{i}".encode(), partition=0, timestamp=base + i * 1000,
                  on_delivery=log)
        p.flush(10)  # one batch per record, so every batch has its own timestamps
    flush_all(p, log, 10)

    c = confluent_consumer(broker.bootstrap)
    try:
        def lookup(ts):
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            return tp.offset

        assert lookup(base - 10_000) == 0
        assert lookup(base) == 0
        assert lookup(base + 4500) == 5
        assert lookup(base + 9000) == 9
        assert lookup(base + 60_000) == -1, "past the last record: no offset (-1)"
    finally:
        c.close()

    back = confluent_read_all(broker.bootstrap, topic, [0])
    assert [r.timestamp for r in back.records] == [base + i * 1000 for i in range(10)]


def test_timestamp_type_is_create_time(broker):
    topic = unique_topic("tstype")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    log = DeliveryLog()
    p = producer(broker.bootstrap)
    p.produce(topic, value=b"x", timestamp=1_600_000_000_000, on_delivery=log)
    flush_all(p, log, 1)
    c = confluent_consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        msg = wait_until(lambda: _non_eof(c.poll(0.5)), message="one record")
        assert msg.timestamp() == (TIMESTAMP_CREATE_TIME, 1_600_000_000_000)
    finally:
        c.close()


def _non_eof(msg):
    if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
        return None
    assert msg.error() is None, msg.error()
    return msg


# -- auto-create ---------------------------------------------------------------------------


def test_auto_create_on_creates_topic_when_producing(broker):
    topic = unique_topic("auto")
    admin = confluent_admin(broker.bootstrap)
    assert topic_partition_count(admin, topic) is None
    log = DeliveryLog()
    p = producer(broker.bootstrap)
    p.produce(topic, value=b"hello", on_delivery=log)
    flush_all(p, log, 1)
    wait_for_partitions(admin, topic, 1)  # num.partitions defaults to 1
    back = confluent_read_all(broker.bootstrap, topic, [0])
    assert [r.value for r in back.records] == [b"hello"]


def test_auto_created_topic_uses_num_partitions(broker_with):
    b = broker_with({"num.partitions": "3"})
    topic = unique_topic("auto3")
    log = DeliveryLog()
    p = producer(b.bootstrap)
    p.produce(topic, value=b"hello", on_delivery=log)
    flush_all(p, log, 1)
    wait_for_partitions(confluent_admin(b.bootstrap), topic, 3)


def test_auto_create_off_fails_produce_and_creates_nothing(broker_with):
    b = broker_with({"auto.create.topics.enable": "false"})
    topic = unique_topic("noauto")
    log = DeliveryLog()
    p = producer(
        b.bootstrap,
        **{"topic.metadata.propagation.max.ms": 2000, "message.timeout.ms": 15000},
    )
    p.produce(topic, value=b"nowhere", on_delivery=log)
    assert p.flush(30) == 0
    assert log.acked == []
    assert log.failed_codes == [KafkaError.UNKNOWN_TOPIC_OR_PART] or log.failed_codes == [
        KafkaError._UNKNOWN_TOPIC
    ], f"expected an unknown-topic delivery error, got {log.failed}"
    assert topic_partition_count(confluent_admin(b.bootstrap), topic) is None


# -- offsets and deletion ------------------------------------------------------------------


def test_delete_records_moves_low_watermark(broker):
    topic = unique_topic("delrec")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)
    log = DeliveryLog()
    p = producer(broker.bootstrap)
    for i in range(10):
        p.produce(topic, value=f"r{i}".encode(), partition=0, on_delivery=log)
    flush_all(p, log, 10)

    admin = confluent_admin(broker.bootstrap)
    if not hasattr(admin, "delete_records"):
        pytest.skip("AdminClient.delete_records needs confluent-kafka >= 2.4")
    tp = TopicPartition(topic, 0, 4)
    result = admin.delete_records([tp])[tp].result(timeout=30)
    assert result.low_watermark == 4

    c = confluent_consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (4, 10)
    finally:
        c.close()
    back = confluent_read_all(broker.bootstrap, topic, [0])
    assert [(r.offset, r.value) for r in back.records] == [(i, f"r{i}".encode()) for i in range(4, 10)]

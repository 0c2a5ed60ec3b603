"""Malformed and hostile input: it must end at most the offending connection, never the
broker, and well-formed but invalid requests get the right Kafka error codes.

Raw frames are hand-built with `kafka_wire` (the only place in the suite that does so);
the invalid-topic and bad-partition cases go through real clients as well.
"""

from __future__ import annotations

import random
import struct

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import NewTopic

import kafka_wire as wire
from support import (
    DeliveryLog,
    confluent_admin,
    confluent_create_topic,
    topic_partition_count,
    unique_topic,
)


# Every test here runs against one broker and against a three-broker cluster.
pytestmark = pytest.mark.cluster


@pytest.fixture
def node(broker):
    """The broker process raw connections go to: the only one, or the first of a cluster
    (the `broker` fixture checks at teardown that all of them are still running)."""
    return broker.brokers[0]


def assert_broker_still_serves(broker, other: wire.Connection | None = None) -> None:
    """The broker process is alive, an already-open connection still works, and so does a
    new one."""
    assert broker.running, f"broker exited with code {broker.last_exit_code}"
    if other is not None:
        assert other.api_versions(correlation_id=77).error_code == wire.ERROR_NONE
    with wire.Connection(broker.port) as fresh:
        assert fresh.api_versions(correlation_id=78).error_code == wire.ERROR_NONE


def test_api_versions_v3_lists_the_core_apis(node):
    with wire.Connection(node.port) as conn:
        resp = conn.api_versions(correlation_id=5)
    assert resp.error_code == wire.ERROR_NONE
    assert resp.trailing == 0
    for key in (wire.API_PRODUCE, 1, 2, wire.API_METADATA, wire.API_API_VERSIONS):
        assert key in resp.apis, f"api {key} not advertised: {sorted(resp.apis)}"
    lo, hi = resp.apis[wire.API_API_VERSIONS]
    assert lo <= 3 <= hi
    # Transaction version 2 (KIP-890): EndTxn v5 and Produce v12 are advertised.
    assert resp.apis[26][1] >= 5, resp.apis[26]
    assert resp.apis[wire.API_PRODUCE][1] >= 12, resp.apis[wire.API_PRODUCE]


def test_unsupported_api_versions_version_gets_v0_error_35_and_connection_stays_open(node):
    with wire.Connection(node.port) as conn:
        conn.send(wire.api_versions_request(99, correlation_id=41))
        resp = wire.decode_api_versions_v0(conn.read_response(41))
        assert resp.error_code == wire.ERROR_UNSUPPORTED_VERSION
        assert resp.trailing == 0, (
            f"{resp.trailing} bytes after the v0 body: not a v0-format response"
        )
        assert wire.API_API_VERSIONS in resp.apis
        assert resp.apis[wire.API_API_VERSIONS][1] >= 3
        assert {wire.API_PRODUCE, 1, wire.API_METADATA} <= set(resp.apis)

        # Same connection: the client retries at a version from the list.
        again = conn.api_versions(correlation_id=42)
        assert again.error_code == wire.ERROR_NONE
        assert again.apis == resp.apis


@pytest.mark.parametrize("size", [100 * 1024 * 1024 + 1, 2**31 - 1], ids=["100MiB+1", "2GiB-1"])
def test_oversized_frame_closes_only_that_connection(node, size):
    with wire.Connection(node.port) as other:
        assert other.api_versions(correlation_id=1).error_code == wire.ERROR_NONE
        with wire.Connection(node.port) as bad:
            bad.send_ignoring_reset(struct.pack(">i", size) + b"\x00\x12\x00\x03" + b"\x00" * 60)
            closed, got = bad.closed_by_peer()
            assert closed, f"a {size}-byte frame header left the connection open (got {got!r})"
        assert_broker_still_serves(node, other)


@pytest.mark.parametrize("size", [-1, -(2**31), 0, 1, 3])
def test_negative_empty_or_headerless_frame_closes_the_connection(node, size):
    with wire.Connection(node.port) as other:
        assert other.api_versions(correlation_id=1).error_code == wire.ERROR_NONE
        with wire.Connection(node.port) as bad:
            body = b"\x00" * max(size, 0)
            bad.send_ignoring_reset(struct.pack(">i", size) + body)
            closed, got = bad.closed_by_peer()
            assert closed, f"frame of size {size} left the connection open (got {got!r})"
        assert_broker_still_serves(node, other)


def test_random_garbage_frames_close_only_their_connections(node):
    with wire.Connection(node.port) as other:
        advertised = set(other.api_versions(correlation_id=1).apis)
        rng = random.Random(0x6D696C6C)
        sent = 0
        while sent < 25:
            payload = rng.randbytes(rng.randint(8, 300))
            (api_key,) = struct.unpack(">h", payload[:2])
            if api_key in advertised:
                continue  # random bytes that happen to name a real API: not garbage enough
            sent += 1
            with wire.Connection(node.port) as bad:
                bad.send_ignoring_reset(wire.frame(payload))
                closed, got = bad.closed_by_peer()
                assert closed, f"garbage frame {payload[:16].hex()}... left the connection open"
        assert_broker_still_serves(node, other)


def test_known_api_with_garbage_body_closes_the_connection(node):
    with wire.Connection(node.port) as other:
        assert other.api_versions(correlation_id=1).error_code == wire.ERROR_NONE
        rng = random.Random(7)
        for i in range(5):
            # Metadata v1 whose topic array claims ~2 billion entries and then stops.
            body = b"\x7f" + rng.randbytes(3) + rng.randbytes(rng.randint(0, 40))
            with wire.Connection(node.port) as bad:
                bad.send_ignoring_reset(
                    wire.frame(wire.request_header_v1(wire.API_METADATA, 1, 100 + i) + body)
                )
                closed, got = bad.closed_by_peer()
                assert closed, f"truncated Metadata request left the connection open ({got!r})"
        assert_broker_still_serves(node, other)


def test_unknown_api_key_closes_the_connection(node):
    with wire.Connection(node.port) as other:
        assert other.api_versions(correlation_id=1).error_code == wire.ERROR_NONE
        with wire.Connection(node.port) as bad:
            bad.send_ignoring_reset(wire.frame(wire.request_header_v1(9999, 0, 7)))
            closed, got = bad.closed_by_peer()
            assert closed, f"api key 9999 left the connection open (got {got!r})"
        assert_broker_still_serves(node, other)


@pytest.mark.parametrize(
    "name", ["bad topic!", "..", "x" * 250, "slash/topic"], ids=["space-bang", "dotdot", "250-chars", "slash"]
)
def test_create_topic_with_invalid_name_fails_with_invalid_topic(broker, name):
    admin = confluent_admin(broker.bootstrap)
    with pytest.raises(KafkaException) as exc:
        admin.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)
    err = exc.value.args[0]
    assert err.code() == KafkaError.TOPIC_EXCEPTION, f"got {err}"
    assert topic_partition_count(admin, name) is None


def test_produce_to_missing_partition_fails_with_unknown_partition(broker):
    topic = unique_topic("onepart")
    confluent_create_topic(broker.bootstrap, topic, partitions=1)

    # Through librdkafka, which checks the partition against metadata first.
    log = DeliveryLog()
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                  "message.timeout.ms": 10000})
    p.produce(topic, value=b"to nowhere", partition=99, on_delivery=log)
    assert p.flush(30) == 0
    assert log.acked == []
    assert log.failed_codes == [KafkaError._UNKNOWN_PARTITION], log.failed

    # Straight to partition 0's leader: a valid Produce v3 for partition 0 succeeds, the same
    # for partition 99 gets UNKNOWN_TOPIC_OR_PARTITION.
    leader = confluent_admin(broker.bootstrap).list_topics(topic, timeout=10).topics[topic].partitions[0].leader
    with wire.Connection(broker.port_of(leader)) as conn:
        lo, hi = conn.api_versions().apis[wire.API_PRODUCE]
        assert lo <= 3 <= hi, f"Produce v3 not advertised ({lo}..{hi})"
        batch = wire.record_batch([b"raw"])
        conn.send(wire.produce_v3_request(topic, 0, batch, correlation_id=10))
        ok = wire.decode_produce_v3(conn.read_response(10))
        assert ok == {(topic, 0): (wire.ERROR_NONE, 0)}
        conn.send(wire.produce_v3_request(topic, 99, batch, correlation_id=11))
        bad = wire.decode_produce_v3(conn.read_response(11))
        assert bad[(topic, 99)][0] == wire.ERROR_UNKNOWN_TOPIC_OR_PARTITION
    assert topic_partition_count(confluent_admin(broker.bootstrap), topic) == 1

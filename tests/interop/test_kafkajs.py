"""kafkajs (pure JavaScript client) against a real Millrace broker.

`node/roundtrip.js` creates a topic, produces keyed messages with headers and reads offsets
with the admin client; it prints JSON, and the test reads the records back with confluent-kafka.
`node/group.js` produces with kafkajs's idempotent producer and consumes in a consumer group,
committing on disconnect.
`node/transactions.js` commits, aborts and commits with `sendOffsets` through a transactional
producer, then reads read_committed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from support import confluent_read_all, unique_topic

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules" / "kafkajs").is_dir(),
        reason="kafkajs not installed: run `npm ci` in tests/interop/node (scripts/test does)",
    ),
    # Every test here runs against one broker and against a three-broker cluster.
    pytest.mark.cluster,
]

COUNT = 60


def run_roundtrip(bootstrap: str, topic: str) -> dict:
    proc = subprocess.run(
        [NODE, str(NODE_DIR / "roundtrip.js"), bootstrap, topic, str(COUNT)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=NODE_DIR,
    )
    assert proc.returncode == 0, (
        f"roundtrip.js exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise AssertionError(f"roundtrip.js printed no JSON: {proc.stdout!r}\n{proc.stderr}") from exc


def test_kafkajs_creates_topic_and_produces_keyed_messages_with_headers(broker):
    topic = unique_topic("kafkajs")
    result = run_roundtrip(broker.bootstrap, topic)

    assert result["created"] is True
    assert result["listed"] is True
    [md] = result["metadata"]
    assert md["name"] == topic
    assert [p["partition"] for p in md["partitions"]] == [0, 1, 2]
    nodes = sorted(b.node_id for b in broker.brokers)
    for p in md["partitions"]:
        assert p["leader"] in nodes and sorted(p["replicas"]) == nodes, p

    for r in result["sendResults"]:
        assert r["errorCode"] == 0, r

    offsets = {o["partition"]: o for o in result["offsets"]}
    assert sorted(offsets) == [0, 1, 2]
    assert all(o["low"] == 0 for o in offsets.values())
    assert sum(o["high"] for o in offsets.values()) == COUNT

    back = confluent_read_all(broker.bootstrap, topic, range(3))
    by_part = back.by_partition()
    for p, o in offsets.items():
        assert len(by_part.get(p, [])) == o["high"], f"partition {p} vs kafkajs high watermark"

    sent = {m["value"].encode(): m for m in result["sent"]}
    assert sorted(r.value for r in back.records) == sorted(sent)
    partitions_of_key = defaultdict(set)
    for r in back.records:
        m = sent[r.value]
        assert r.key == m["key"].encode()
        assert dict(r.headers) == {k: v.encode() for k, v in m["headers"].items()}
        partitions_of_key[r.key].add(r.partition)
    assert all(len(ps) == 1 for ps in partitions_of_key.values())
    for p, records in by_part.items():
        seqs = [int(dict(r.headers)["seq"]) for r in records]
        assert seqs == sorted(seqs), f"partition {p} out of order"
        assert [r.offset for r in records] == list(range(len(records)))


def test_kafkajs_idempotent_producer_and_consumer_group_round_trip(broker):
    topic = unique_topic("kafkajs-group")
    group = unique_topic("kafkajs-g")
    count = 40
    proc = subprocess.run(
        [NODE, str(NODE_DIR / "group.js"), broker.bootstrap, topic, group, str(count)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=NODE_DIR,
    )
    assert proc.returncode == 0, f"group.js exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    consumed = result["consumed"]
    assert sorted(m["value"] for m in consumed) == sorted(result["sent"]), "every record once"
    by_partition = defaultdict(list)
    for m in consumed:
        by_partition[m["partition"]].append(m["offset"])
    for partition, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), f"partition {partition} in order, no gaps"
    committed = {c["partition"]: c["offset"] for c in result["committed"]}
    for partition, offsets in by_partition.items():
        assert committed[partition] == len(offsets), "committed = next offset to read"
    assert result["groupState"] == "Empty", "the consumer left the group on disconnect"


def test_kafkajs_transactions_commit_abort_and_send_offsets(broker):
    topic = unique_topic("kafkajs-txn")
    group = unique_topic("kafkajs-txn-group")
    proc = subprocess.run(
        [NODE, str(NODE_DIR / "transactions.js"), broker.bootstrap, topic, unique_topic("tid"), group],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=NODE_DIR,
    )
    assert proc.returncode == 0, (
        f"transactions.js exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    committed = [f"c1-{i}" for i in range(5)] + [f"c2-{i}" for i in range(5)]
    # kafkajs reads read_committed by default: the aborted transaction is skipped.
    assert result["consumed"] == committed
    assert [(p["partition"], p["offset"]) for p in result["committed"]] == [(0, "42")]
    # librdkafka's read_committed consumer agrees, and read_uncommitted sees all 15.
    back = confluent_read_all(broker.bootstrap, topic, [0], **{"isolation.level": "read_committed"})
    assert [r.value.decode() for r in back.records] == committed
    everything = confluent_read_all(
        broker.bootstrap, topic, [0], **{"isolation.level": "read_uncommitted"}
    )
    assert len(everything.records) == 15

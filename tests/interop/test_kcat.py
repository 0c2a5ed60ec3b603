"""kcat (the command-line client on Debian's librdkafka) against a real Millrace broker.

Skipped when `kcat` is not on PATH (scripts/test installs it with apt-get when run as root).
kcat's consumer without -G assigns partitions itself, so no consumer group is needed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict

import pytest

from support import confluent_create_topic, unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = [
    pytest.mark.skipif(KCAT is None, reason="kcat is not installed"),
    # Every test here runs against one broker and against a three-broker cluster.
    pytest.mark.cluster,
]


def kcat(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(
        [KCAT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"kcat {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
        f"stderr:\n{proc.stderr}"
    )
    return proc.stdout


def test_list_shows_topic_and_partitions(broker):
    topic = unique_topic("kcat-list")
    confluent_create_topic(broker.bootstrap, topic, partitions=4)
    listing = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", "-m", "15"))
    nodes = sorted(b.node_id for b in broker.brokers)
    assert sorted((b["id"], b["name"]) for b in listing["brokers"]) == [
        (n, f"127.0.0.1:{broker.port_of(n)}") for n in nodes
    ]
    topics = {t["topic"]: t for t in listing["topics"]}
    assert topic in topics
    parts = sorted(topics[topic]["partitions"], key=lambda p: p["partition"])
    assert [p["partition"] for p in parts] == [0, 1, 2, 3]
    for p in parts:
        assert p["leader"] in nodes, p
        assert sorted(r["id"] for r in p["replicas"]) == nodes, p
        assert sorted(r["id"] for r in p["isrs"]) == nodes, p

    text = kcat("-b", broker.bootstrap, "-L", "-m", "15")
    assert f'topic "{topic}" with 4 partitions' in text


def test_keyed_produce_then_consume_everything_back(broker):
    topic = unique_topic("kcat-rt")
    confluent_create_topic(broker.bootstrap, topic, partitions=3)
    lines = [f"key{i % 5}:value {i}" for i in range(200)]
    kcat(
        "-b", broker.bootstrap, "-P", "-t", topic, "-K:",
        "-X", "enable.idempotence=false", "-X", "acks=all",
        stdin="\n".join(lines) + "\n",
    )

    out = kcat(
        "-b", broker.bootstrap, "-C", "-t", topic, "-e", "-o", "beginning",
        "-f", "%k:%s\n",
    )
    got = out.splitlines()
    assert sorted(got) == sorted(lines)

    # Keys stay on one partition and keep their order within it.
    detail = kcat(
        "-b", broker.bootstrap, "-C", "-t", topic, "-e", "-o", "beginning",
        "-f", "%p|%o|%k|%s\n",
    )
    seqs_by_key = defaultdict(list)
    partitions_by_key = defaultdict(set)
    for row in detail.splitlines():
        part, _offset, key, value = row.split("|")
        partitions_by_key[key].add(int(part))
        seqs_by_key[key].append(int(value.split()[1]))
    assert all(len(ps) == 1 for ps in partitions_by_key.values())
    assert all(seqs == sorted(seqs) for seqs in seqs_by_key.values())

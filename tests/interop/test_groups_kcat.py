"""kcat's balanced consumer (`-G`, librdkafka's KafkaConsumer) against a real Millrace broker.

Skipped when `kcat` is not on PATH. In `-G` mode kcat starts every assigned partition at `-o`
when one is given (ignoring committed offsets), so these tests give no `-o` and set
`auto.offset.reset=earliest` instead: the group's committed offsets decide where each run
starts. kcat keeps librdkafka's auto commit, which commits on revoke and when `-e` makes it
close at the end of its partitions.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Producer
from confluent_kafka.admin import AdminClient

from support import DeliveryLog, confluent_create_topic, unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = [
    pytest.mark.skipif(KCAT is None, reason="kcat is not installed"),
    # Every test here runs against one broker and against a three-broker cluster.
    pytest.mark.cluster,
]

PARTITIONS = 4
#: Long enough for two kcat processes started together to join the first generation.
GROUP_OVERRIDES = {
    # Kafka's default: the second kcat joins within it even on a loaded machine (1.5 s was
    # sometimes too short on the 3-broker cluster, and the first took every partition).
    "group.initial.rebalance.delay.ms": "3000",
    "offsets.topic.num.partitions": "3",
}
KCAT_TIMEOUT_S = 60


def produce(bootstrap: str, topic: str, count: int, start: int = 0) -> dict[tuple[int, int], str]:
    log = DeliveryLog()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(topic, value=f"v{i}".encode(), partition=i % PARTITIONS, on_delivery=log)
    assert p.flush(30) == 0
    assert not log.failed, log.failed[:5]
    return {(part, off): value.decode() for part, off, _k, value in log.acked}


def balanced_consumer(bootstrap: str, group: str, topic: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            KCAT, "-b", bootstrap, "-G", group,
            "-X", "auto.offset.reset=earliest",
            "-X", "session.timeout.ms=6000",
            "-e",                      # exit once every assigned partition is at its end
            "-f", "%p %o %s\n",        # partition, offset, value
            "-v",                      # rebalance events on stderr, for failure reports
            topic,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> tuple[list[tuple[int, int, str]], str]:
    try:
        out, err = proc.communicate(timeout=KCAT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"kcat -G did not exit within {KCAT_TIMEOUT_S}s\nstdout tail:\n{out[-2000:]}\n"
            f"stderr tail:\n{err[-4000:]}"
        )
    assert proc.returncode == 0, f"kcat exited {proc.returncode}\nstderr:\n{err[-4000:]}"
    records = []
    for line in out.splitlines():
        part, off, value = line.split(" ", 2)
        records.append((int(part), int(off), value))
    return records, err


def test_two_balanced_consumers_read_every_record_once(broker_with):
    broker = broker_with(GROUP_OVERRIDES)
    topic = unique_topic("kcat-grp")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 400)
    group = unique_topic("g")

    procs = [balanced_consumer(broker.bootstrap, group, topic) for _ in range(2)]
    try:
        results = [finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    seen = Counter()
    for records, _err in results:
        for part, off, value in records:
            seen[(part, off)] += 1
            assert produced.get((part, off)) == value, f"{(part, off)}: {value!r}"
    dupes = sorted(k for k, n in seen.items() if n > 1)
    missing = sorted(set(produced) - set(seen))
    stderr = "\n".join(
        f"--- kcat {i} stderr ---\n{err[-3000:]}" for i, (_r, err) in enumerate(results)
    )
    assert not dupes and not missing, (
        f"duplicates {dupes[:10]}, missing {len(missing)} e.g. {missing[:10]}\n{stderr}"
    )
    parts = [{part for part, _o, _v in records} for records, _err in results]
    assert all(parts), f"one kcat consumed nothing (partitions per process: {parts})\n{stderr}"
    assert not (parts[0] & parts[1]), (
        f"both consumers read the same partitions {parts}: the group did not split them\n{stderr}"
    )


def test_balanced_consumer_resumes_from_committed_offsets(broker_with):
    broker = broker_with(GROUP_OVERRIDES)
    topic = unique_topic("kcat-resume")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    first_batch = produce(broker.bootstrap, topic, 80)
    group = unique_topic("g")

    records, err = finish(balanced_consumer(broker.bootstrap, group, topic))
    got = {(p, o): v for p, o, v in records}
    assert len(records) == len(first_batch) and got == first_batch, (
        f"first run read {len(records)} records, expected all {len(first_batch)}\n{err[-3000:]}"
    )

    # kcat committed its positions when it closed: the group's offsets are the log ends.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    committed = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=15
    )[group].result(timeout=20)
    ends = {p: 1 + max(o for q, o in first_batch if q == p) for p in range(PARTITIONS)}
    assert {tp.partition: tp.offset for tp in committed.topic_partitions} == ends

    second_batch = produce(broker.bootstrap, topic, 40, start=80)
    records, err = finish(balanced_consumer(broker.bootstrap, group, topic))
    got = {(p, o): v for p, o, v in records}
    assert len(records) == len(second_batch) and got == second_batch, (
        f"second run should read only the {len(second_batch)} new records, read "
        f"{len(records)}: old ones again: {sorted(set(got) & set(first_batch))[:10]}, "
        f"new ones missing: {sorted(set(second_batch) - set(got))[:10]}\n{err[-3000:]}"
    )

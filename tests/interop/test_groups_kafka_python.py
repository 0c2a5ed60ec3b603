"""Consumer groups with kafka-python 3.x against a real Millrace broker.

Each KafkaConsumer runs in its own thread (kafka-python consumers polled one after another
from a single thread rebalance forever, against Apache Kafka too: a follower's SyncGroup waits
for the leader, which that thread only polls later). Consumers use kafka-python's auto commit,
which also commits synchronously before every rebalance and on close, so the group as a whole
reads each record once.

Covered: 2 and 3 members on a 6-partition topic (disjoint, complete, every record once); a
member that closes (LeaveGroup) and one killed with SIGKILL in a child process: the others
take over within the session timeout; committed offsets resumed exactly by a new member;
range and roundrobin assignors; KafkaAdminClient list_groups / describe_groups /
list_group_offsets / delete_groups.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.structs import OffsetAndMetadata

from support import unique_topic, wait_until

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
TAKEOVER_SLACK_S = 4.0
GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "500",
    "offsets.topic.num.partitions": "4",
}


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
        wait_until(
            lambda: len(admin.describe_topics([topic])[0]["partitions"]) == partitions,
            timeout=15,
            message=f"{topic} in metadata",
        )
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, count: int, start: int = 0) -> dict[tuple[int, int], bytes]:
    """`count` records round-robin over the partitions: {(partition, offset): value}."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        futures = [
            producer.send(topic, value=f"r{i}".encode(), key=f"k{i}".encode(),
                          partition=i % PARTITIONS)
            for i in range(start, start + count)
        ]
        producer.flush(30)
        out = {}
        for i, fut in zip(range(start, start + count), futures):
            md = fut.get(timeout=30)
            out[(md.partition, md.offset)] = f"r{i}".encode()
        return out
    finally:
        producer.close()


def high_watermarks(records) -> dict[int, int]:
    hw = {p: 0 for p in range(PARTITIONS)}
    for part, off in records:
        hw[part] = max(hw[part], off + 1)
    return hw


class Listener(ConsumerRebalanceListener):
    """Records the callbacks; does no IO (it runs on kafka-python's IO loop)."""

    def __init__(self, member: "Member"):
        self.member = member

    def on_partitions_revoked(self, revoked):
        self.member.note("revoke", revoked)

    def on_partitions_assigned(self, assigned):
        self.member.note("assign", assigned)


class Member:
    """A subscribed KafkaConsumer polled continuously in its own thread."""

    def __init__(self, bootstrap, group, topic, name, **extra):
        self.name = name
        self.topic = topic
        self.conf = dict(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=name,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=1000,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            request_timeout_ms=30000,
        )
        self.conf.update(extra)
        self.lock = threading.Lock()
        self._assignment: frozenset[int] = frozenset()
        self._positions: dict[int, int] = {}
        self.records: list[tuple[int, int, bytes]] = []
        self.callbacks: list[tuple[str, tuple[int, ...]]] = []
        self.exception: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"kp-{name}", daemon=True)

    def note(self, kind, partitions) -> None:
        with self.lock:
            self.callbacks.append((kind, tuple(sorted(tp.partition for tp in partitions))))

    def start(self) -> "Member":
        self.thread.start()
        return self

    def _run(self) -> None:
        consumer = None
        try:
            consumer = KafkaConsumer(**self.conf)
            consumer.subscribe([self.topic], listener=Listener(self))
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=100)
                got = [
                    (m.partition, m.offset, m.value) for msgs in batch.values() for m in msgs
                ]
                assignment = frozenset(tp.partition for tp in consumer.assignment())
                positions = {}
                for p in assignment:
                    try:
                        positions[p] = consumer.position(
                            TopicPartition(self.topic, p), timeout_ms=1000
                        )
                    except Exception:  # noqa: BLE001 - not known yet (e.g. mid-rebalance)
                        pass
                with self.lock:
                    self.records.extend(got)
                    self._assignment = assignment
                    self._positions = positions
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.exception = exc
        finally:
            if consumer is not None:
                try:
                    consumer.close()  # auto commit, then LeaveGroup
                except BaseException as exc:  # noqa: BLE001
                    self.exception = self.exception or exc

    def assignment(self) -> frozenset[int]:
        with self.lock:
            return self._assignment

    def caught_up(self, hw) -> bool:
        with self.lock:
            return bool(self._assignment) and all(
                self._positions.get(p) == hw[p] for p in self._assignment
            )

    def record_count(self) -> int:
        with self.lock:
            return len(self.records)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name} did not close within {timeout}s"

    def check_healthy(self) -> None:
        assert self.exception is None, f"{self.name}: consumer thread failed: {self.exception!r}"

    def __repr__(self) -> str:
        with self.lock:
            return (
                f"<{self.name} assignment={sorted(self._assignment)} "
                f"positions={self._positions}>"
            )


@pytest.fixture
def members():
    started: list[Member] = []
    yield started
    for m in started:
        m._stop.set()
    for m in started:
        m.thread.join(30)


def start_members(members_list, bootstrap, group, topic, names, **extra) -> list[Member]:
    new = [Member(bootstrap, group, topic, n, **extra) for n in names]
    members_list.extend(new)
    for m in new:
        m.start()
    return new


def disjoint_cover(assignments) -> bool:
    assignments = list(assignments)
    union = set().union(*assignments) if assignments else set()
    return (
        all(assignments)
        and sum(len(a) for a in assignments) == len(union)
        and union == set(range(PARTITIONS))
    )


def wait_settled(group_members, hw, timeout=30.0, what="group to settle"):
    wait_until(
        lambda: disjoint_cover(m.assignment() for m in group_members)
        and all(m.caught_up(hw) for m in group_members),
        timeout=timeout,
        message=lambda: f"{what}: {group_members} "
        f"(thread errors: {[(m.name, m.exception) for m in group_members]})",
    )


def assert_exactly_once(group_members, produced) -> None:
    seen = Counter()
    values = {}
    for m in group_members:
        for p, off, value in m.records:
            seen[(p, off)] += 1
            values[(p, off)] = value
    dupes = sorted(k for k, c in seen.items() if c > 1)
    assert not dupes, f"records read more than once (partition, offset): {dupes[:20]}"
    missing = sorted(set(produced) - set(seen))
    assert not missing, f"{len(missing)} records never read, e.g. {missing[:20]}"
    extra = sorted(set(seen) - set(produced))
    assert not extra, f"read records that were not produced: {extra[:20]}"
    assert all(values[k] == v for k, v in produced.items()), "values differ from the produced ones"


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
def test_members_get_disjoint_complete_assignments_and_read_each_record_once(
    broker_factory, members, count
):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("kpgrp")
    create_topic(broker.bootstrap, topic)
    produced = produce(broker.bootstrap, topic, 600)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    group_members = start_members(
        members, broker.bootstrap, group, topic, [f"kp{i}" for i in range(count)]
    )
    wait_settled(group_members, hw)
    for m in group_members:
        assert len(m.assignment()) == PARTITIONS // count, f"uneven: {group_members}"
    assert_exactly_once(group_members, produced)
    for m in group_members:
        m.close()
        m.check_healthy()


def test_member_that_leaves_hands_its_partitions_to_the_others(broker_factory, members):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("kpgrp-leave")
    create_topic(broker.bootstrap, topic)
    produced = produce(broker.bootstrap, topic, 300)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    a, b, c = start_members(members, broker.bootstrap, group, topic, ["a", "b", "c"])
    wait_settled([a, b, c], hw)

    started = time.monotonic()
    c.close()  # commits, then LeaveGroup
    c.check_healthy()
    wait_settled(
        [a, b], hw, timeout=SESSION_TIMEOUT_MS / 1000, what="a and b to take over c's partitions"
    )
    print(f"takeover after LeaveGroup took {time.monotonic() - started:.2f}s")

    produced.update(produce(broker.bootstrap, topic, 120, start=300))
    hw = high_watermarks(produced)
    wait_settled([a, b], hw)
    assert_exactly_once([a, b, c], produced)
    for m in (a, b):
        m.check_healthy()


CHILD_CONSUMER = r"""
import json, sys
from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
conf = json.loads(sys.argv[1])
topic = sys.argv[2]
class L(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        print(json.dumps({"revoked": sorted(tp.partition for tp in revoked)}), flush=True)
    def on_partitions_assigned(self, assigned):
        print(json.dumps({"assigned": sorted(tp.partition for tp in assigned)}), flush=True)
c = KafkaConsumer(**conf)
c.subscribe([topic], listener=L())
while True:
    c.poll(timeout_ms=100)
"""


def test_member_killed_without_leaving_is_replaced_within_session_timeout(broker_factory, members):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("kpgrp-dead")
    create_topic(broker.bootstrap, topic)
    produced = produce(broker.bootstrap, topic, 300)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    a, b = start_members(members, broker.bootstrap, group, topic, ["a", "b"])
    child_conf = dict(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        client_id="doomed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_CONSUMER, json.dumps(child_conf), topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    child_assignment: list[set[int]] = [set()]
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            event = json.loads(line)
            if "assigned" in event:
                child_assignment[0] = set(event["assigned"])
            elif "revoked" in event:
                child_assignment[0] = set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: disjoint_cover([a.assignment(), b.assignment(), child_assignment[0]])
            and a.caught_up(hw)
            and b.caught_up(hw),
            timeout=40,
            message=lambda: f"3 members to settle: {a}, {b}, child {child_assignment[0]}, "
            f"child output {lines[-5:]}",
        )
        orphaned = set(child_assignment[0])
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        reader.join(10)

    wait_until(
        lambda: disjoint_cover([a.assignment(), b.assignment()]),
        timeout=SESSION_TIMEOUT_MS / 1000 + TAKEOVER_SLACK_S,
        interval=0.05,
        message=lambda: f"survivors to take over {sorted(orphaned)} within the session timeout "
        f"+ {TAKEOVER_SLACK_S}s: {a}, {b}",
    )
    print(f"takeover after SIGKILL took {time.monotonic() - killed_at:.2f}s")
    wait_settled([a, b], hw)

    before = {m.name: m.record_count() for m in (a, b)}
    more = produce(broker.bootstrap, topic, 60, start=300)
    produced.update(more)
    hw = high_watermarks(produced)
    wait_settled([a, b], hw)
    new_reads = Counter()
    for m in (a, b):
        for p, off, _v in m.records[before[m.name]:]:
            new_reads[(p, off)] += 1
    assert set(new_reads) == set(more) and all(n == 1 for n in new_reads.values()), (
        f"records produced after the takeover not read exactly once: {new_reads}"
    )
    for m in (a, b):
        m.check_healthy()


def test_committed_offsets_are_resumed_exactly_by_a_new_member(broker_factory):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("kpgrp-resume")
    create_topic(broker.bootstrap, topic)
    produced = produce(broker.bootstrap, topic, 240)
    hw = high_watermarks(produced)
    group = unique_topic("g")
    conf = dict(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    first = KafkaConsumer(**conf)
    first_reads: list[tuple[int, int]] = []
    try:
        first.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(first_reads) < 100:
            assert time.monotonic() < deadline, f"first member read only {len(first_reads)}"
            for msgs in first.poll(timeout_ms=200, max_records=100 - len(first_reads)).values():
                first_reads.extend((m.partition, m.offset) for m in msgs)
        nxt: dict[int, int] = {}
        for p, off in first_reads:
            nxt[p] = max(nxt.get(p, 0), off + 1)
        first.commit(
            {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in nxt.items()}
        )
    finally:
        first.close(autocommit=False)

    second = KafkaConsumer(**conf)
    second_reads: list[tuple[int, int]] = []
    try:
        got = {tp.partition: second.committed(tp) for tp in tps}
        assert {p: o for p, o in got.items() if o is not None} == nxt, (
            f"committed() {got} != what was committed {nxt}"
        )
        second.subscribe([topic])
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, f"second member stuck after {len(second_reads)}"
            for msgs in second.poll(timeout_ms=200).values():
                second_reads.extend((m.partition, m.offset) for m in msgs)
            assigned = second.assignment()
            if len(assigned) == PARTITIONS and all(
                second.position(tp) == hw[tp.partition] for tp in assigned
            ):
                break
    finally:
        second.close(autocommit=False)

    for p in range(PARTITIONS):
        offs = [o for q, o in second_reads if q == p]
        start = nxt.get(p, 0)
        assert offs == list(range(start, hw[p])), (
            f"partition {p}: second member read {offs[:3]}..{offs[-3:]}, expected "
            f"{start}..{hw[p] - 1} (committed {nxt.get(p)})"
        )
    both = Counter(first_reads) + Counter(second_reads)
    assert set(both) == set(produced) and all(n == 1 for n in both.values())


@pytest.mark.parametrize(
    "assignor, expected",
    [
        (RangePartitionAssignor, [{0, 1, 2}, {3, 4, 5}]),
        (RoundRobinPartitionAssignor, [{0, 2, 4}, {1, 3, 5}]),
    ],
    ids=["range", "roundrobin"],
)
def test_range_and_roundrobin_assignors(broker_factory, members, assignor, expected):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("kpgrp-assignor")
    create_topic(broker.bootstrap, topic)
    produced = produce(broker.bootstrap, topic, 120)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    a, b = start_members(
        members, broker.bootstrap, group, topic, ["a", "b"],
        partition_assignment_strategy=[assignor],
    )
    wait_settled([a, b], hw)
    got = sorted([set(a.assignment()), set(b.assignment())], key=min)
    assert got == expected, f"{assignor.name}: {got}, expected {expected}"

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        # kafka-python's leader rejoins when its metadata snapshot changed since it assigned
        # (common on a loaded machine), so read the protocol once the group is stable again.
        described = {}

        def stable() -> bool:
            described.update(admin.describe_groups([group])[group])
            return described.get("group_state") == "Stable"

        wait_until(stable, timeout=30, message=lambda: f"group {group} stable: {described}")
        assert described["protocol_data"] == assignor.name, described
    finally:
        admin.close()
    wait_settled([a, b], hw)
    assert_exactly_once([a, b], produced)
    for m in (a, b):
        m.check_healthy()


def test_admin_lists_describes_and_deletes_groups(broker_factory, members):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("kpgrp-admin")
    create_topic(broker.bootstrap, topic)
    produced = produce(broker.bootstrap, topic, 60)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    a, b = start_members(members, broker.bootstrap, group, topic, ["kp-admin-a", "kp-admin-b"])
    wait_settled([a, b], hw)

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups()}
        assert group in listed, f"{group} not in {sorted(listed)}"
        assert listed[group]["protocol_type"] == "consumer"
        stable = {g["group_id"] for g in admin.list_groups(states_filter=["Stable"])}
        empty = {g["group_id"] for g in admin.list_groups(states_filter=["Empty"])}
        assert group in stable and group not in empty

        desc = admin.describe_groups([group])[group]
        assert desc["error"] is None, desc
        assert desc["group_state"] == "Stable"
        assert desc["protocol_type"] == "consumer"
        assert desc["protocol_data"] == "range"
        by_client = {m["client_id"]: m for m in desc["members"]}
        assert set(by_client) == {"kp-admin-a", "kp-admin-b"}, desc["members"]
        for member in (a, b):
            assignment = by_client[member.name]["member_assignment"]
            described = {
                p
                for t in assignment["assigned_partitions"]
                if t["topic"] == topic
                for p in t["partitions"]
            }
            assert described == set(member.assignment()), (
                f"described assignment of {member.name} {described} != {member.assignment()}"
            )

        # Active group: deleting it fails with NON_EMPTY_GROUP.
        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}

        for m in (a, b):
            m.close()  # auto commit on close, then LeaveGroup
            m.check_healthy()
        offsets = admin.list_group_offsets(group)[group]
        got = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
        assert got == hw, f"list_group_offsets {got}, expected the high watermarks {hw}"

        wait_until(
            lambda: admin.describe_groups([group])[group]["group_state"] == "Empty",
            timeout=15,
            message="group Empty after both members closed",
        )
        assert admin.delete_groups([group]) == {group: "OK"}
        assert group not in {g["group_id"] for g in admin.list_groups()}
        after = admin.list_group_offsets(group)[group]
        assert {tp: om for tp, om in after.items() if om.offset >= 0} == {}, after
    finally:
        admin.close()

"""Consumer groups with librdkafka (confluent-kafka) against a real Millrace broker.

Every consumer runs in its own thread (or, for the member that dies, its own process) and is
polled continuously: a group member that is not polled cannot take part in a rebalance.
Members commit what they consumed synchronously whenever partitions are revoked (and so when
they close), which is what makes "every record exactly once across the group" a fair
expectation through rebalances.

Covered: 2 and 3 members on a 6-partition topic (disjoint assignments covering every
partition, every record read once); a member that closes (LeaveGroup) and one that is killed
with SIGKILL (no LeaveGroup, no heartbeats): the others take over within the session timeout;
committed offsets resumed exactly by a new member; cooperative-sticky incremental rebalancing;
range and roundrobin; AdminClient list/describe groups, list offsets, delete groups.
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
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from support import DeliveryLog, confluent_create_topic, unique_topic, wait_until

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
#: Allowed on top of the session timeout for the survivors to notice (next heartbeat), rejoin
#: and get their new assignment.
TAKEOVER_SLACK_S = 4.0

#: Short initial rebalance delay so tests are fast, long enough for members started together
#: to usually land in one generation (the tests do not depend on it).
GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "500",
    "offsets.topic.num.partitions": "4",
}


# -- helpers -------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, count: int, start: int = 0) -> dict[tuple[int, int], bytes]:
    """Produce `count` records round-robin over the partitions; returns {(partition, offset):
    value} from the delivery reports (all must succeed)."""
    log = DeliveryLog()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "socket.timeout.ms": 10000})
    for i in range(start, start + count):
        p.produce(topic, value=f"r{i}".encode(), key=f"k{i}".encode(), partition=i % PARTITIONS,
                  on_delivery=log)
    assert p.flush(30) == 0, "records still queued after 30s"
    assert not log.failed, f"delivery failures: {log.failed[:5]}"
    assert len(log.acked) == count
    return {(part, off): value for part, off, _key, value in log.acked}


def high_watermarks(records: dict[tuple[int, int], bytes]) -> dict[int, int]:
    hw = {p: 0 for p in range(PARTITIONS)}
    for part, off in records:
        hw[part] = max(hw[part], off + 1)
    return hw


class GroupMember:
    """One subscribed confluent-kafka consumer, polled continuously in its own thread.

    Keeps its current assignment (eager: replaced on assign; cooperative: incremental), the
    records it returned, the offset at which each assigned partition last reported EOF since
    it was assigned, and every rebalance callback. Commits its consumed positions synchronously
    on revoke (and therefore on close)."""

    def __init__(self, bootstrap: str, group: str, topic: str, name: str, **extra):
        self.name = name
        self.topic = topic
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "socket.timeout.ms": 10000,
        }
        self.conf.update(extra)
        # confluent-kafka has no rebalance_protocol(); cooperative-sticky is the only
        # cooperative assignor, so the configured strategy tells which protocol is in use.
        self.cooperative = "cooperative" in str(self.conf.get("partition.assignment.strategy"))
        self.lock = threading.Lock()
        self._assignment: set[int] = set()
        self._eof: dict[int, int] = {}
        self._next: dict[int, int] = {}  # next offset to consume, per partition we consumed
        self.records: list[tuple[int, int, bytes]] = []
        self.callbacks: list[tuple[str, tuple[int, ...], float]] = []
        self.errors: list[str] = []
        self.commit_errors: list[str] = []
        #: librdkafka's own view (`assignment()` after each poll), one entry per change.
        self.history: list[frozenset[int]] = []
        self.exception: BaseException | None = None
        self._stop = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)

    # -- thread ----------------------------------------------------------------------------

    def start(self) -> "GroupMember":
        self.thread.start()
        return self

    def _commit(self, consumer: Consumer, partitions) -> None:
        with self.lock:
            offsets = [
                TopicPartition(self.topic, p, self._next[p])
                for p in sorted(partitions)
                if p in self._next
            ]
        if not offsets:
            return
        try:
            result = consumer.commit(offsets=offsets, asynchronous=False)
            bad = [tp for tp in result or [] if tp.error is not None]
            if bad:
                self.commit_errors.append(f"partition errors: {bad}")
        except KafkaException as exc:
            self.commit_errors.append(str(exc))

    def _on_assign(self, consumer, partitions) -> None:
        parts = {tp.partition for tp in partitions}
        with self.lock:
            if self.cooperative:
                self._assignment |= parts
            else:
                self._assignment = set(parts)
            for p in parts:
                self._eof.pop(p, None)
                self._next.pop(p, None)
            self.callbacks.append(("assign", tuple(sorted(parts)), time.monotonic()))

    def _on_revoke(self, consumer, partitions) -> None:
        parts = {tp.partition for tp in partitions}
        self._commit(consumer, parts)
        with self.lock:
            if self.cooperative:
                self._assignment -= parts
            else:
                self._assignment = set()
            for p in parts:
                self._eof.pop(p, None)
            self.callbacks.append(("revoke", tuple(sorted(parts)), time.monotonic()))

    def _on_lost(self, consumer, partitions) -> None:
        parts = {tp.partition for tp in partitions}
        with self.lock:
            self._assignment -= parts
            for p in parts:
                self._eof.pop(p, None)
            self.callbacks.append(("lost", tuple(sorted(parts)), time.monotonic()))

    def _run(self) -> None:
        consumer = None
        try:
            consumer = Consumer(self.conf)
            consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                current = frozenset(tp.partition for tp in consumer.assignment())
                with self.lock:
                    if not self.history or self.history[-1] != current:
                        self.history.append(current)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        with self.lock:
                            if msg.partition() in self._assignment:
                                self._eof[msg.partition()] = msg.offset()
                    else:
                        self.errors.append(str(err))
                    continue
                with self.lock:
                    self.records.append((msg.partition(), msg.offset(), msg.value()))
                    self._next[msg.partition()] = msg.offset() + 1
                    self._eof.pop(msg.partition(), None)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.exception = exc
        finally:
            if consumer is not None:
                try:
                    # Commit what is still assigned, then leave the group (LeaveGroup); the
                    # revoke callback during close commits as well.
                    with self.lock:
                        current = set(self._assignment)
                    self._commit(consumer, current)
                    consumer.close()
                except BaseException as exc:  # noqa: BLE001
                    self.exception = self.exception or exc
            self.closed.set()

    # -- observation -----------------------------------------------------------------------

    def assignment(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self._assignment)

    def caught_up(self, hw: dict[int, int]) -> bool:
        """Every assigned partition reported EOF at its high watermark since it was assigned."""
        with self.lock:
            return bool(self._assignment) and all(
                self._eof.get(p) == hw[p] for p in self._assignment
            )

    def record_count(self) -> int:
        with self.lock:
            return len(self.records)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"{self.name}: consumer did not close in {timeout}s"

    def check_healthy(self) -> None:
        assert self.exception is None, f"{self.name}: consumer thread failed: {self.exception!r}"
        assert not self.commit_errors, f"{self.name}: commits failed: {self.commit_errors}"
        assert not self.errors, f"{self.name}: consumer errors: {self.errors[:5]}"

    def __repr__(self) -> str:
        return f"<{self.name} assignment={sorted(self.assignment())}>"


@pytest.fixture
def members():
    """Collects started members and closes any still running at teardown."""
    started: list[GroupMember] = []
    yield started
    for m in started:
        m._stop.set()
    for m in started:
        m.thread.join(30)


def start_members(members_list, bootstrap, group, topic, names, **extra) -> list[GroupMember]:
    new = [GroupMember(bootstrap, group, topic, name, **extra) for name in names]
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
    """Every member has a non-empty assignment, together disjoint and covering all
    partitions, and each member read its partitions up to the high watermark."""

    def settled():
        return disjoint_cover(m.assignment() for m in group_members) and all(
            m.caught_up(hw) for m in group_members
        )

    wait_until(
        settled,
        timeout=timeout,
        message=lambda: f"{what}: {group_members} (thread errors: "
        f"{[(m.name, m.exception, m.errors[-3:], m.commit_errors[-3:]) for m in group_members]})",
    )


def assert_exactly_once(group_members, produced: dict[tuple[int, int], bytes]) -> None:
    seen = Counter()
    values = {}
    for m in group_members:
        for p, off, value in m.records:
            seen[(p, off)] += 1
            values[(p, off)] = value
    dupes = {k: c for k, c in seen.items() if c > 1}
    assert not dupes, f"records read more than once (partition, offset): {sorted(dupes)[:20]}"
    missing = set(produced) - set(seen)
    assert not missing, f"{len(missing)} records never read, e.g. {sorted(missing)[:20]}"
    extra = set(seen) - set(produced)
    assert not extra, f"read records that were not produced: {sorted(extra)[:20]}"
    wrong = [k for k in produced if values[k] != produced[k]]
    assert not wrong, f"values differ from what was produced at {wrong[:10]}"


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
def test_members_get_disjoint_complete_assignments_and_read_each_record_once(
    broker_factory, members, count
):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("grp")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 600)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    group_members = start_members(
        members, broker.bootstrap, group, topic, [f"c{i}" for i in range(count)]
    )
    wait_settled(group_members, hw)

    for m in group_members:
        assert len(m.assignment()) == PARTITIONS // count, (
            f"uneven assignment for {count} members of a {PARTITIONS}-partition topic: "
            f"{group_members}"
        )
    for m in group_members:
        m.check_healthy()
    assert_exactly_once(group_members, produced)
    for m in group_members:
        m.close()
        m.check_healthy()


def test_member_that_leaves_hands_its_partitions_to_the_others(broker_factory, members):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("grp-leave")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 300)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    a, b, c = start_members(members, broker.bootstrap, group, topic, ["a", "b", "c"])
    wait_settled([a, b, c], hw)
    leaving = set(c.assignment())

    started = time.monotonic()
    c.close()  # commits, then LeaveGroup
    c.check_healthy()
    wait_settled(
        [a, b], hw, timeout=SESSION_TIMEOUT_MS / 1000, what="a and b to take over c's partitions"
    )
    took = time.monotonic() - started
    assert leaving <= set(a.assignment()) | set(b.assignment())

    # New records, including on c's old partitions, are read by the survivors exactly once;
    # c's commit on leaving means nothing of c's is read again.
    produced.update(produce(broker.bootstrap, topic, 120, start=300))
    hw = high_watermarks(produced)
    wait_settled([a, b], hw)
    for m in (a, b):
        m.check_healthy()
    assert_exactly_once([a, b, c], produced)
    print(f"takeover after LeaveGroup took {took:.2f}s")


CHILD_CONSUMER = r"""
import json, sys
from confluent_kafka import Consumer
conf = json.loads(sys.argv[1])
topic = sys.argv[2]
c = Consumer(conf)
def report(kind, parts):
    print(json.dumps({kind: sorted(tp.partition for tp in parts)}), flush=True)
c.subscribe([topic], on_assign=lambda cons, parts: report("assigned", parts),
            on_revoke=lambda cons, parts: report("revoked", parts))
while True:
    m = c.poll(0.1)
    if m is not None and m.error() is None:
        print(json.dumps({"record": [m.partition(), m.offset()]}), flush=True)
"""


class ChildMember:
    """A group member in a child process (killed with SIGKILL to simulate a crash)."""

    def __init__(self, conf: dict, topic: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_CONSUMER, json.dumps(conf), topic],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lock = threading.Lock()
        self._assignment: set[int] = set()
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "assigned" in event:
                    self._assignment = set(event["assigned"])
                elif "revoked" in event:
                    self._assignment = set()

    def assignment(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self._assignment)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)

    def __repr__(self) -> str:
        return f"<child pid={self.proc.pid} assignment={sorted(self.assignment())}>"


def test_member_killed_without_leaving_is_replaced_within_session_timeout(broker_factory, members):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("grp-dead")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 300)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    a, b = start_members(members, broker.bootstrap, group, topic, ["a", "b"])
    child = ChildMember(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "client.id": "doomed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        },
        topic,
    )
    try:
        wait_until(
            lambda: disjoint_cover([a.assignment(), b.assignment(), child.assignment()])
            and a.caught_up(hw)
            and b.caught_up(hw),
            timeout=30,
            message=lambda: f"3 members to settle: {a}, {b}, {child}; child output "
            f"{child.lines[-10:]}",
        )
        orphaned = set(child.assignment())
        killed_at = time.monotonic()
        child.kill9()
    finally:
        child.kill9()

    limit = SESSION_TIMEOUT_MS / 1000 + TAKEOVER_SLACK_S
    wait_until(
        lambda: disjoint_cover([a.assignment(), b.assignment()]),
        timeout=limit,
        interval=0.05,
        message=lambda: f"survivors to take over the killed member's partitions {sorted(orphaned)} "
        f"within the session timeout + {TAKEOVER_SLACK_S}s: {a}, {b}",
    )
    took = time.monotonic() - killed_at
    print(f"takeover after SIGKILL took {took:.2f}s (session timeout {SESSION_TIMEOUT_MS} ms)")

    # The survivors read the dead member's partitions (it committed nothing, so from the
    # start) and every new record once.
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
    assert set(new_reads) == set(more) and all(c == 1 for c in new_reads.values()), (
        f"records produced after the takeover not read exactly once: {new_reads}"
    )
    for m in (a, b):
        m.check_healthy()


def test_committed_offsets_are_resumed_exactly_by_a_new_member(broker_factory):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("grp-resume")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 240)
    hw = high_watermarks(produced)
    group = unique_topic("g")
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "socket.timeout.ms": 10000,
    }

    # First member: consume 100 records, commit exactly what it consumed, close.
    first = Consumer(conf)
    first_reads: list[tuple[int, int]] = []
    try:
        first.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(first_reads) < 100:
            assert time.monotonic() < deadline, f"first member read only {len(first_reads)}"
            msg = first.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            first_reads.append((msg.partition(), msg.offset()))
        nxt: dict[int, int] = {}
        for p, off in first_reads:
            nxt[p] = max(nxt.get(p, 0), off + 1)
        result = first.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in nxt.items()], asynchronous=False
        )
        assert all(tp.error is None for tp in result), f"commit errors: {result}"
    finally:
        first.close()

    # Second member: committed() shows the commits; reading continues at exactly them.
    second = Consumer(conf)
    second_reads: list[tuple[int, int]] = []
    try:
        committed = second.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15
        )
        got = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
        assert got == nxt, f"committed() {got} != what was committed {nxt}"

        second.subscribe([topic])
        eof: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while not all(eof.get(p) == hw[p] for p in range(PARTITIONS)):
            assert time.monotonic() < deadline, f"second member stuck: eof {eof}, hw {hw}"
            msg = second.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof[msg.partition()] = msg.offset()
                    continue
                raise AssertionError(f"consumer error: {msg.error()}")
            second_reads.append((msg.partition(), msg.offset()))
    finally:
        second.close()

    for p in range(PARTITIONS):
        offs = [o for q, o in second_reads if q == p]
        expected_first = nxt.get(p, 0)
        assert offs == list(range(expected_first, hw[p])), (
            f"partition {p}: second member read {offs[:3]}..{offs[-3:]} but should read "
            f"{expected_first}..{hw[p] - 1} (committed {nxt.get(p)})"
        )
    both = Counter(first_reads) + Counter(second_reads)
    assert set(both) == set(produced) and all(c == 1 for c in both.values()), (
        "first + second member together did not read every record exactly once"
    )


def test_cooperative_sticky_rebalances_incrementally(broker_factory, members):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("grp-coop")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 300)
    hw = high_watermarks(produced)
    group = unique_topic("g")
    coop = {"partition.assignment.strategy": "cooperative-sticky"}

    a, b = start_members(members, broker.bootstrap, group, topic, ["a", "b"], **coop)
    wait_settled([a, b], hw)
    before = {"a": set(a.assignment()), "b": set(b.assignment())}
    marks = {m.name: len(m.callbacks) for m in (a, b)}
    history_marks = {m.name: len(m.history) for m in (a, b)}

    (c,) = start_members(members, broker.bootstrap, group, topic, ["c"], **coop)
    wait_settled([a, b, c], hw, what="c to join with incremental rebalancing")
    produced.update(produce(broker.bootstrap, topic, 120, start=300))
    hw = high_watermarks(produced)
    wait_settled([a, b, c], hw)

    after = {m.name: set(m.assignment()) for m in (a, b, c)}
    assert all(len(v) == 2 for v in after.values()), f"expected 2 partitions each: {after}"
    for name in ("a", "b"):
        kept = after[name] & before[name]
        assert after[name] <= before[name] and kept, (
            f"{name} should keep some of its partitions and get none new: before "
            f"{sorted(before[name])}, after {sorted(after[name])}"
        )
        later = a.callbacks[marks["a"]:] if name == "a" else b.callbacks[marks["b"]:]
        revokes = [parts for kind, parts, _t in later if kind == "revoke"]
        assert revokes, f"{name}: no incremental revoke observed ({later})"
        for parts in revokes:
            assert set(parts) <= before[name] - after[name], (
                f"{name} had {parts} revoked, but only {sorted(before[name] - after[name])} "
                "moved: not incremental"
            )
        assert not [x for x in later if x[0] == "lost"], f"{name} lost partitions: {later}"
        # librdkafka's own view: the kept partitions stayed assigned throughout (an eager
        # rebalance would have emptied the assignment in between).
        m = a if name == "a" else b
        seen = m.history[history_marks[name] - 1:]
        assert all(kept <= s for s in seen), (
            f"{name}'s kept partitions {sorted(kept)} were unassigned on the way: "
            f"{[sorted(s) for s in seen]}"
        )
    for m in (a, b, c):
        # Shown with the report if an assertion below fails.
        print(m.name, [(kind, parts) for kind, parts, _t in m.callbacks],
              [sorted(h) for h in m.history])
    c_assigns = [set(parts) for kind, parts, _t in c.callbacks if kind == "assign"]
    assert set().union(*c_assigns) == after["c"], f"c's incremental assigns {c_assigns}"
    for m in (a, b, c):
        m.check_healthy()
    assert_exactly_once([a, b, c], produced)


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("range", [{0, 1, 2}, {3, 4, 5}]),
        ("roundrobin", [{0, 2, 4}, {1, 3, 5}]),
    ],
)
def test_range_and_roundrobin_assignors(broker_factory, members, strategy, expected):
    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic(f"grp-{strategy}")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 120)
    hw = high_watermarks(produced)
    group = unique_topic("g")

    a, b = start_members(
        members, broker.bootstrap, group, topic, ["a", "b"],
        **{"partition.assignment.strategy": strategy},
    )
    wait_settled([a, b], hw)
    got = sorted([set(a.assignment()), set(b.assignment())], key=min)
    assert got == expected, f"{strategy}: assignments {got}, expected {expected}"

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # keep it alive for the future
    desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
    assert desc.partition_assignor == strategy
    assert_exactly_once([a, b], produced)
    for m in (a, b):
        m.check_healthy()


def test_admin_lists_describes_and_deletes_groups(broker_factory, members):
    from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions

    broker = broker_factory(GROUP_OVERRIDES)
    topic = unique_topic("grp-admin")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 60)
    hw = high_watermarks(produced)
    group = unique_topic("g")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})

    a, b = start_members(members, broker.bootstrap, group, topic, ["admin-a", "admin-b"])
    wait_settled([a, b], hw)

    # list_consumer_groups: the group, Stable, a consumer (not simple) group.
    listing = admin.list_consumer_groups(request_timeout=15).result(timeout=20)
    assert not listing.errors, listing.errors
    ours = [g for g in listing.valid if g.group_id == group]
    assert len(ours) == 1, f"group {group} not listed: {[g.group_id for g in listing.valid]}"
    assert ours[0].state == ConsumerGroupState.STABLE
    assert ours[0].is_simple_consumer_group is False
    empty_only = admin.list_consumer_groups(
        request_timeout=15, states={ConsumerGroupState.EMPTY}
    ).result(timeout=20)
    assert group not in [g.group_id for g in empty_only.valid], "state filter ignored"

    # describe_consumer_groups: state, protocol, coordinator, members and their assignments.
    desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
    assert desc.group_id == group
    assert desc.state == ConsumerGroupState.STABLE
    assert desc.partition_assignor == "range"
    assert desc.coordinator.id == 1 and desc.coordinator.port == broker.port
    by_client = {m.client_id: m for m in desc.members}
    assert set(by_client) == {"admin-a", "admin-b"}, desc.members
    for member in (a, b):
        d = by_client[member.name]
        assert d.member_id, "empty member id"
        assert {(tp.topic, tp.partition) for tp in d.assignment.topic_partitions} == {
            (topic, p) for p in member.assignment()
        }, f"described assignment of {member.name} differs from its own"

    # Close both: their commits on revoke/close are what list_consumer_group_offsets shows.
    # Deleting while members are active must fail with NON_EMPTY_GROUP.
    fut = admin.delete_consumer_groups([group], request_timeout=15)[group]
    with pytest.raises(KafkaException) as info:
        fut.result(timeout=20)
    assert info.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, info.value

    for m in (a, b):
        m.close()
        m.check_healthy()
    offsets = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=15
    )[group].result(timeout=20)
    got = {tp.partition: tp.offset for tp in offsets.topic_partitions if tp.topic == topic}
    assert got == hw, f"list_consumer_group_offsets {got}, expected the high watermarks {hw}"

    wait_until(
        lambda: admin.describe_consumer_groups([group], request_timeout=10)[group]
        .result(timeout=15)
        .state
        == ConsumerGroupState.EMPTY,
        timeout=15,
        message="group to become Empty after its members closed",
    )
    admin.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
    listing = admin.list_consumer_groups(request_timeout=15).result(timeout=20)
    assert group not in [g.group_id for g in listing.valid], "deleted group still listed"
    after = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=15
    )[group].result(timeout=20)
    assert [tp for tp in after.topic_partitions if tp.offset >= 0] == [], (
        f"offsets survived group deletion: {after.topic_partitions}"
    )

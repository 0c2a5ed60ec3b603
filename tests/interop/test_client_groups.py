"""Our consumer and librdkafka's as members of the same consumer group.

Our side is the built binary, `millrace consume -t TOPIC --group GROUP --format json`, run as
a child process that tails the topic (no `-e`); a reader thread parses its JSON lines. It uses
our client's defaults: range then cooperative-sticky (as the Java client), auto commit every
5 s, a commit before partitions are revoked and on close (SIGINT), then LeaveGroup. Its debug
log (RUST_LOG=millrace_client=debug) goes to a file that failure messages quote.

The librdkafka side is a confluent-kafka consumer with its default assignors (range,
roundrobin), polled continuously in a thread; it commits what it consumed synchronously when
partitions are revoked and before it closes. The only protocol the two have in common is
range (eager), so every rebalance revokes everything: with both sides committing before they
give partitions up, every record is read exactly once across the group.

Covered: the two share a 6-partition topic 3 + 3 (AdminClient describe_consumer_groups: Stable,
range, each member's assignment, disjoint, covering); records produced while the group is
stable are read by whoever owns their partition, every record exactly once; the millrace member
stopped with SIGINT exits 0 having committed exactly what it printed, and librdkafka takes over
all 6 partitions from those offsets, reading what millrace had not, nothing it had.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

# Every test here runs against one broker and against a three-broker cluster.
pytestmark = pytest.mark.cluster

from conftest import millrace_bin
from support import DeliveryLog, confluent_admin, confluent_create_topic, unique_topic, wait_until

PARTITIONS = 6
#: librdkafka's side; ours keeps its defaults (45 s session, 3 s heartbeat), which the CLI
#: does not expose.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
#: No initial delay: the first member is assigned everything at once, and the second one's
#: join is a real rebalance that takes partitions away from it.
GROUP_OVERRIDES = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "4",
}
#: `millrace consume` sets this client id; librdkafka's member uses RDKAFKA_ID.
MILLRACE_ID = "millrace-cli"
RDKAFKA_ID = "rdkafka-member"
#: For waits that include a rebalance (our member notices one on its next heartbeat, 3 s).
SETTLE_S = 45.0


# -- producing -----------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, count: int, start: int = 0, prefix: str = "r"):
    """`count` keyed records spread evenly over the partitions; returns {(partition, offset):
    (key, value)} from the delivery reports (all must succeed)."""
    log = DeliveryLog()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "socket.timeout.ms": 10000})
    for i in range(start, start + count):
        p.produce(topic, key=f"k{i}".encode(), value=f"{prefix}{i}".encode(),
                  partition=i % PARTITIONS, on_delivery=log)
    assert p.flush(30) == 0, "records still queued after 30s"
    assert not log.failed, f"delivery failures: {log.failed[:5]}"
    assert len(log.acked) == count
    return {(part, off): (key.decode(), value.decode()) for part, off, key, value in log.acked}


class BackgroundProducer:
    """Produces keyed records at a steady pace in a thread until stopped, so that a member can
    leave while records keep arriving."""

    def __init__(self, bootstrap: str, topic: str, start: int):
        self.bootstrap, self.topic, self.next = bootstrap, topic, start
        self.log = DeliveryLog()
        self._stop = threading.Event()
        self.exception: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bg-producer", daemon=True)

    def start(self) -> "BackgroundProducer":
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            p = Producer(
                {"bootstrap.servers": self.bootstrap, "linger.ms": 1, "socket.timeout.ms": 10000}
            )
            while not self._stop.wait(0.004):  # pacing, ~250 records/s
                i = self.next
                p.produce(self.topic, key=f"k{i}".encode(), value=f"s{i}".encode(),
                          partition=i % PARTITIONS, on_delivery=self.log)
                self.next += 1
                p.poll(0)
            assert p.flush(30) == 0, "background records still queued after 30s"
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.exception = exc

    def stop(self) -> dict[tuple[int, int], tuple[str, str]]:
        self._stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "background producer did not finish"
        assert self.exception is None, f"background producer failed: {self.exception!r}"
        assert not self.log.failed, f"delivery failures: {self.log.failed[:5]}"
        return {(part, off): (k.decode(), v.decode()) for part, off, k, v in self.log.acked}


def high_watermarks(records) -> dict[int, int]:
    hw = {p: 0 for p in range(PARTITIONS)}
    for part, off in records:
        hw[part] = max(hw[part], off + 1)
    return hw


# -- the millrace member ---------------------------------------------------------------------


class MillraceMember:
    """`millrace consume --group G --format json` in a child process, tailing the topic."""

    def __init__(self, bootstrap: str, group: str, topic: str, workdir: Path):
        self.topic = topic
        self.log_path = workdir / f"millrace-consume-{group}.log"
        self.cmd = [
            str(millrace_bin()), "consume", "-b", bootstrap, "-t", topic,
            "--group", group, "--format", "json",
        ]
        env = dict(os.environ)
        env["RUST_LOG"] = "millrace_client=debug"
        env.setdefault("NO_COLOR", "1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env
            )
        self.lock = threading.Lock()
        #: (partition, offset, key, value) in the order printed.
        self.records: list[tuple[int, int, str | None, str | None]] = []
        self.bad_lines: list[str] = []
        self.reader = threading.Thread(target=self._read, name="millrace-stdout", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                obj = json.loads(line)
                rec = (obj["partition"], obj["offset"], obj["key"], obj["value"])
                ok = obj["topic"] == self.topic and isinstance(rec[0], int)
            except (ValueError, KeyError, TypeError):
                ok = False
            with self.lock:
                if ok:
                    self.records.append(rec)
                else:
                    self.bad_lines.append(line)

    def read(self) -> list[tuple[int, int, str | None, str | None]]:
        with self.lock:
            return list(self.records)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGINT (commit, LeaveGroup, exit); returns the exit code once stdout is drained."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"millrace consume did not exit within {timeout}s of SIGINT\n{self.log_tail()}"
            ) from None
        self.reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.reader.join(10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            text = []
        return f"--- millrace consume log tail ({self.log_path}) ---\n" + "\n".join(text[-lines:])

    def __repr__(self) -> str:
        return f"<millrace pid={self.proc.pid} rc={self.proc.poll()} read={len(self.records)}>"


# -- the librdkafka member -----------------------------------------------------------------


class RdkafkaMember:
    """A subscribed confluent-kafka consumer polled continuously in its own thread. Records
    carry the assignment epoch (number of assign callbacks so far) they were read in, and
    whether their partition was assigned at the time."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        self.topic = topic
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": RDKAFKA_ID,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "socket.timeout.ms": 10000,
        }
        self.lock = threading.Lock()
        self._assignment: set[int] = set()
        self._next: dict[int, int] = {}
        self.epoch = 0
        #: (partition, offset, key, value, epoch, partition assigned when read)
        self.records: list[tuple[int, int, str, str, int, bool]] = []
        self.callbacks: list[tuple[str, tuple[int, ...]]] = []
        self.errors: list[str] = []
        self.commit_errors: list[str] = []
        self.exception: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rdkafka-member", daemon=True)

    def start(self) -> "RdkafkaMember":
        self.thread.start()
        return self

    def _commit(self, consumer: Consumer, partitions) -> None:
        with self.lock:
            offsets = [TopicPartition(self.topic, p, self._next[p])
                       for p in sorted(partitions) if p in self._next]
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
            self._assignment = set(parts)  # eager (range): the whole new assignment
            for p in parts:
                self._next.pop(p, None)
            self.epoch += 1
            self.callbacks.append(("assign", tuple(sorted(parts))))

    def _on_revoke(self, consumer, partitions) -> None:
        parts = {tp.partition for tp in partitions}
        self._commit(consumer, parts)
        with self.lock:
            self._assignment -= parts
            self.callbacks.append(("revoke", tuple(sorted(parts))))

    def _on_lost(self, consumer, partitions) -> None:
        parts = {tp.partition for tp in partitions}
        with self.lock:
            self._assignment -= parts
            self.callbacks.append(("lost", tuple(sorted(parts))))

    def _run(self) -> None:
        consumer = None
        try:
            consumer = Consumer(self.conf)
            consumer.subscribe([self.topic], on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_lost)
            while not self._stop.is_set():
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        self.errors.append(str(msg.error()))
                    continue
                p = msg.partition()
                with self.lock:
                    self.records.append((p, msg.offset(), msg.key().decode(),
                                         msg.value().decode(), self.epoch,
                                         p in self._assignment))
                    self._next[p] = msg.offset() + 1
        except BaseException as exc:  # noqa: BLE001 - surfaced by check_healthy
            self.exception = exc
        finally:
            if consumer is not None:
                try:
                    with self.lock:
                        current = set(self._assignment)
                    self._commit(consumer, current)
                    consumer.close()
                except BaseException as exc:  # noqa: BLE001
                    self.exception = self.exception or exc

    def assignment(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self._assignment)

    def read(self) -> list[tuple[int, int, str, str, int, bool]]:
        with self.lock:
            return list(self.records)

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"librdkafka member did not close in {timeout}s"

    def check_healthy(self) -> None:
        assert self.exception is None, f"librdkafka member failed: {self.exception!r}"
        assert not self.commit_errors, f"librdkafka commits failed: {self.commit_errors}"
        assert not self.errors, f"librdkafka consumer errors: {self.errors[:5]}"

    def __repr__(self) -> str:
        return f"<rdkafka assignment={sorted(self.assignment())} callbacks={self.callbacks}>"


@pytest.fixture
def members():
    """Collects members; any still running at teardown are closed (librdkafka) or killed
    (millrace)."""
    started: list = []
    yield started
    for m in started:
        if isinstance(m, MillraceMember):
            m.kill()
        else:
            m._stop.set()
    for m in started:
        if isinstance(m, RdkafkaMember):
            m.thread.join(30)


# -- observing the group -------------------------------------------------------------------


def describe(admin, group: str):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


def try_describe(admin, group: str) -> str:
    """For failure messages: the description, or why there is none."""
    try:
        d = describe(admin, group)
    except Exception as exc:  # noqa: BLE001
        return f"(describe failed: {exc!r})"
    members = {
        m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
        for m in d.members
    }
    return f"state={d.state} assignor={d.partition_assignor!r} members={members}"


def committed_offsets(admin, group: str, topic: str) -> dict[int, int]:
    listed = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=15
    )[group].result(timeout=20)
    return {tp.partition: tp.offset for tp in listed.topic_partitions if tp.topic == topic}


def stable_assignments(admin, group: str, topic: str, clients: set[str]):
    """{client id: partitions} if the group is Stable with exactly one member per id in
    `clients` and their assignments are disjoint and cover every partition; else None."""
    desc = describe(admin, group)
    if desc.state != ConsumerGroupState.STABLE or len(desc.members) != len(clients):
        return None
    got = {}
    for m in desc.members:
        parts = {tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic}
        got[m.client_id] = frozenset(parts)
    if set(got) != clients:
        return None
    union = set().union(*got.values())
    if union != set(range(PARTITIONS)) or sum(len(v) for v in got.values()) != PARTITIONS:
        return None
    return got


def wait_stable(admin, group, topic, clients, rd: RdkafkaMember, mr=None, what="group"):
    """Waits for `stable_assignments` and for librdkafka's own view to agree with it."""

    def settled():
        got = stable_assignments(admin, group, topic, clients)
        return got if got and got[RDKAFKA_ID] == rd.assignment() else None

    return wait_until(
        settled,
        timeout=SETTLE_S,
        interval=0.2,
        message=lambda: f"{what} to be Stable with {sorted(clients)}: described "
        f"{try_describe(admin, group)}; {rd}; {mr}\n{mr.log_tail() if mr else ''}",
    )


def distinct_read(mr: MillraceMember, rd: RdkafkaMember) -> set[tuple[int, int]]:
    return {(p, o) for p, o, *_ in mr.read()} | {(p, o) for p, o, *_ in rd.read()}


def wait_all_read(mr, rd, produced, what):
    want = set(produced)
    wait_until(
        lambda: want <= distinct_read(mr, rd),
        timeout=SETTLE_S,
        interval=0.1,
        message=lambda: f"{what}: {len(want - distinct_read(mr, rd))} of {len(want)} records "
        f"unread, e.g. {sorted(want - distinct_read(mr, rd))[:10]}; {mr}; {rd}\n{mr.log_tail()}",
    )


def assert_exactly_once(mr: MillraceMember, rd: RdkafkaMember, produced) -> None:
    seen = Counter()
    content = {}
    for p, off, key, value, *_ in mr.read() + rd.read():
        seen[(p, off)] += 1
        content[(p, off)] = (key, value)
    dupes = sorted(k for k, c in seen.items() if c > 1)
    if dupes:
        who = {k: (sum(1 for r in mr.read() if r[:2] == k), sum(1 for r in rd.read()
                                                                 if r[:2] == k))
               for k in dupes[:10]}
        raise AssertionError(
            f"{len(dupes)} records read more than once, (partition, offset): (times by "
            f"millrace, times by librdkafka): {who}\nlibrdkafka callbacks: {rd.callbacks}\n"
            f"{mr.log_tail()}"
        )
    missing = sorted(set(produced) - set(seen))
    assert not missing, f"{len(missing)} records never read, e.g. {missing[:10]}"
    extra = sorted(set(seen) - set(produced))
    assert not extra, f"read records that were not produced: {extra[:10]}"
    wrong = [k for k in produced if content[k] != produced[k]]
    assert not wrong, (
        f"key/value differ from what was produced at {wrong[:5]}: "
        f"{[(content[k], produced[k]) for k in wrong[:5]]}"
    )


def assert_in_order(mr: MillraceMember, rd: RdkafkaMember) -> None:
    """Each member reads each partition in offset order (a member's ownership of a partition
    may end and start again, at a later offset, across rebalances)."""
    for name, recs in (("millrace", mr.read()), ("librdkafka", rd.read())):
        last: dict[int, int] = {}
        for p, off, *_ in recs:
            assert off > last.get(p, -1), (
                f"{name} read partition {p} offset {off} after offset {last[p]}"
            )
            last[p] = off


# -- tests ---------------------------------------------------------------------------------


def test_our_consumer_and_librdkafka_share_a_group(broker_with, members, tmp_path):
    broker = broker_with(GROUP_OVERRIDES)
    topic = unique_topic("mixed")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 600)
    first_hw = high_watermarks(produced)
    group = unique_topic("g")
    admin = confluent_admin(broker.bootstrap)

    # librdkafka first (it is given all 6 partitions), then ours joins: a rebalance in which
    # librdkafka gives up everything and commits first.
    rd = RdkafkaMember(broker.bootstrap, group, topic)
    members.append(rd)
    rd.start()
    wait_until(lambda: rd.assignment(), timeout=SETTLE_S,
               message=lambda: f"librdkafka member to be assigned partitions: {rd}")
    mr = MillraceMember(broker.bootstrap, group, topic, tmp_path)
    members.append(mr)

    wait_all_read(mr, rd, produced, "the 600 records to be read by the two members")
    stable = wait_stable(admin, group, topic, {MILLRACE_ID, RDKAFKA_ID}, rd, mr)
    desc = describe(admin, group)
    assert desc.partition_assignor == "range", (
        f"the protocol common to both (range) should be chosen, not {desc.partition_assignor}"
    )
    assert all(len(parts) == PARTITIONS // 2 for parts in stable.values()), (
        f"uneven assignment: {stable}"
    )
    rd_callbacks = len(rd.callbacks)

    # While the group is stable, each member reads the new records of its own partitions.
    more = produce(broker.bootstrap, topic, 600, start=600)
    produced.update(more)
    wait_all_read(mr, rd, produced, "the 600 records produced into the stable group")
    assert stable_assignments(admin, group, topic, {MILLRACE_ID, RDKAFKA_ID}) == stable, (
        f"the group rebalanced while the new records were read: {try_describe(admin, group)}"
    )
    assert len(rd.callbacks) == rd_callbacks, f"librdkafka rebalanced: {rd.callbacks}"

    code = mr.stop()
    assert code == 0, f"millrace consume exited {code} on SIGINT\n{mr.log_tail()}"
    rd.close()
    rd.check_healthy()
    assert not mr.bad_lines, f"millrace printed non-JSON or foreign lines: {mr.bad_lines[:5]}"

    assert_exactly_once(mr, rd, produced)
    assert_in_order(mr, rd)
    # Both committed everything they read when they closed.
    hw = high_watermarks(produced)
    assert committed_offsets(admin, group, topic) == hw, (
        f"committed offsets {committed_offsets(admin, group, topic)} after both closed, "
        f"expected the high watermarks {hw}"
    )
    # Each member read only partitions it was assigned at the time: librdkafka's own view at
    # each read; for ours, the stable assignment for every record produced into it (records
    # of the first batch moved with the rebalance; exactly once above covers them).
    not_assigned = [r[:2] for r in rd.read() if not r[5]]
    assert not not_assigned, f"librdkafka read unassigned partitions: {not_assigned[:10]}"
    for name, recs in (("millrace", mr.read()), ("librdkafka", rd.read())):
        client = MILLRACE_ID if name == "millrace" else RDKAFKA_ID
        late = {p for p, off, *_ in recs if off >= first_hw[p]}
        assert late <= stable[client], (
            f"{name} read new records of partitions {sorted(late - stable[client])} "
            f"assigned to the other member (its own: {sorted(stable[client])})"
        )
        assert late == stable[client], (
            f"{name} read nothing new from partitions {sorted(stable[client] - late)}"
        )


def test_librdkafka_takes_over_when_our_consumer_leaves(broker_with, members, tmp_path):
    broker = broker_with(GROUP_OVERRIDES)
    topic = unique_topic("mixed-leave")
    confluent_create_topic(broker.bootstrap, topic, partitions=PARTITIONS)
    produced = produce(broker.bootstrap, topic, 600)
    group = unique_topic("g")
    admin = confluent_admin(broker.bootstrap)

    # Ours first this time: it reads everything, then gives all up (committing) when
    # librdkafka joins; librdkafka must not read any of it again.
    mr = MillraceMember(broker.bootstrap, group, topic, tmp_path)
    members.append(mr)
    wait_until(
        lambda: len({(p, o) for p, o, *_ in mr.read()}) == len(produced),
        timeout=SETTLE_S,
        message=lambda: f"millrace to read all {len(produced)} records alone: {mr}\n"
        f"{mr.log_tail()}",
    )
    rd = RdkafkaMember(broker.bootstrap, group, topic)
    members.append(rd)
    rd.start()
    stable = wait_stable(admin, group, topic, {MILLRACE_ID, RDKAFKA_ID}, rd, mr)
    ours = stable[MILLRACE_ID]
    assert len(ours) == PARTITIONS // 2, f"uneven assignment: {stable}"
    produced.update(produce(broker.bootstrap, topic, 120, start=600))
    wait_all_read(mr, rd, produced, "records produced into the stable group")

    # Ours leaves (SIGINT: commit what it printed, LeaveGroup, exit 0) while records keep
    # arriving on every partition.
    bg = BackgroundProducer(broker.bootstrap, topic, start=720).start()
    wait_until(lambda: len(bg.log.acked) >= 60, timeout=30,
               message=lambda: f"background producer to get going: {len(bg.log.acked)} acked")
    code = mr.stop()
    assert code == 0, f"millrace consume exited {code} on SIGINT\n{mr.log_tail()}"
    assert not mr.bad_lines, f"millrace printed non-JSON or foreign lines: {mr.bad_lines[:5]}"
    printed = mr.read()

    # What it committed is exactly what it printed: the next offset after its last record of
    # each of its partitions (librdkafka commits those partitions only if they are revoked
    # from it again, which nothing here causes).
    committed = committed_offsets(admin, group, topic)
    last_printed = {}
    for p, off, *_ in printed:
        last_printed[p] = max(last_printed.get(p, -1), off)
    for p in ours:
        assert committed.get(p) == last_printed[p] + 1, (
            f"partition {p}: millrace printed up to offset {last_printed[p]} but committed "
            f"{committed.get(p)} (all committed: {committed})\n{mr.log_tail()}"
        )

    everything = wait_stable(admin, group, topic, {RDKAFKA_ID}, rd,
                             what="librdkafka alone after millrace left")
    assert everything[RDKAFKA_ID] == frozenset(range(PARTITIONS))
    takeover_epoch = rd.epoch
    produced.update(bg.stop())
    final = produce(broker.bootstrap, topic, 60, start=bg.next, prefix="f")
    produced.update(final)
    wait_all_read(mr, rd, produced, "librdkafka to read everything after the takeover")
    rd.close()
    rd.check_healthy()

    assert_exactly_once(mr, rd, produced)
    assert_in_order(mr, rd)
    hw = high_watermarks(produced)
    after = [r for r in rd.read() if r[4] >= takeover_epoch]
    for p in ours:
        got = [off for q, off, *_ in after if q == p]
        assert got == list(range(committed[p], hw[p])), (
            f"partition {p}: after the takeover librdkafka read offsets {got[:3]}..{got[-3:]} "
            f"({len(got)}), expected {committed[p]}..{hw[p] - 1}: from millrace's commit to the "
            "end"
        )
    assert {(p, o) for p, o, *_ in after} >= set(final), "librdkafka missed the last records"
    assert not [r[:2] for r in rd.read() if not r[5]], "librdkafka read unassigned partitions"
    wait_until(
        lambda: describe(admin, group).state == ConsumerGroupState.EMPTY,
        timeout=15,
        message=lambda: f"group to be Empty after both left: {try_describe(admin, group)}",
    )

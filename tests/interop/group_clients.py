"""Client adapters for the consumer-group scenarios of test_groups.py.

A scenario (2 or 3 members split a topic, a member leaves, a member is killed, a new member
resumes from commits, the range and roundrobin assignors, the admin API for groups) is written
once in test_groups.py and run with every client here. An adapter says how its client
creates a topic, produces, runs a group member in a thread or a child process, commits and
resumes, and answers the admin questions; the scenario asks and asserts.

Adapters: `CONFLUENT` (librdkafka through confluent-kafka) and `KAFKA_PYTHON` (kafka-python
3.x). Each keeps its client's own way of consuming:

- confluent-kafka members commit what they consumed synchronously whenever partitions are
  revoked (and so when they close), and track EOF per partition;
- kafka-python members use auto commit, which also commits synchronously before every
  rebalance and on close; each KafkaConsumer runs in its own thread (kafka-python consumers
  polled one after another from a single thread rebalance forever, against Apache Kafka too:
  a follower's SyncGroup waits for the leader, which that thread only polls later).

Every member is polled continuously: a member that is not polled cannot take part in a
rebalance. Either way the group as a whole reads each record once.
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
from dataclasses import dataclass

from support import DeliveryLog, confluent_create_topic, wait_until

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


# -- what every client shares -------------------------------------------------------------


def high_watermarks(records) -> dict[int, int]:
    hw = {p: 0 for p in range(PARTITIONS)}
    for part, off in records:
        hw[part] = max(hw[part], off + 1)
    return hw


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
        f"{[m.diagnostics() for m in group_members]})",
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


class ChildMember:
    """A group member in a child process (killed with SIGKILL to simulate a crash). The
    child prints one JSON line per rebalance callback ({"assigned": [...]} or
    {"revoked": [...]}); anything else it prints is kept for failure messages."""

    def __init__(self, script: str, conf: dict, topic: str, stderr):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(conf), topic],
            stdout=subprocess.PIPE,
            stderr=stderr,
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
        """SIGKILL (once; later calls only wait), then wait for the process and its reader."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)

    def __repr__(self) -> str:
        return f"<child pid={self.proc.pid} assignment={sorted(self.assignment())}>"


@dataclass
class GroupListing:
    """One group as ListGroups shows it. `state` is Kafka's name ("Stable", "Empty", ...)
    or None where the client does not report it."""

    group_id: str
    state: str | None
    #: A consumer group (protocol type "consumer"), not a simple one.
    consumer: bool


@dataclass
class GroupDescription:
    """One group as DescribeGroups shows it, normalised across clients."""

    group_id: str
    #: The error the client reports for the group, None when there is none.
    error: object
    state: str
    protocol_type: str | None
    #: The assignor the group chose (Kafka's "protocol").
    assignor: str
    #: (node id, port) of the coordinator, or None where the client does not report it.
    coordinator: tuple[int, int] | None
    #: client id -> (member id, {(topic, partition)} assigned).
    members: dict[str, tuple[str, frozenset[tuple[str, int]]]]


class GroupClient:
    """What a scenario needs from a client. Subclasses implement every method."""

    #: The pytest id.
    name = "?"
    #: Whether the client implements the cooperative-sticky assignor.
    cooperative = False
    #: How long the member-killed scenario waits for its three members to settle.
    child_settle_timeout = 30.0

    def __repr__(self) -> str:
        return self.name

    def create_topic(self, bootstrap: str, topic: str) -> None:
        """Creates `topic` with PARTITIONS partitions and waits for it in metadata."""
        raise NotImplementedError

    def produce(self, bootstrap: str, topic: str, count: int, start: int = 0):
        """Produces records r{start}..r{start+count-1} (keys k..) round-robin over the
        partitions; returns {(partition, offset): value} from the acknowledgements."""
        raise NotImplementedError

    def member(self, bootstrap: str, group: str, topic: str, name: str, **extra):
        """A subscribed member, polled in its own thread once started, with client id `name`
        and extra client options."""
        raise NotImplementedError

    def assignor(self, strategy: str) -> dict:
        """The member options that select the assignor `strategy` ("range", "roundrobin",
        "cooperative-sticky")."""
        raise NotImplementedError

    def child_member(self, bootstrap: str, group: str, topic: str) -> ChildMember:
        """A member in a child process with client id "doomed", committing nothing."""
        raise NotImplementedError

    def read_and_commit(self, bootstrap: str, group: str, topic: str, count: int):
        """A member that reads `count` records, commits exactly what it read, and closes:
        returns what it read [(partition, offset)] and the offsets it committed."""
        raise NotImplementedError

    def resume(self, bootstrap: str, group: str, topic: str, hw: dict[int, int]):
        """A new member of `group`: returns the committed offsets it sees ({partition:
        offset}, committed ones only), then what it reads [(partition, offset)] until it is at
        `hw` on every partition."""
        raise NotImplementedError

    def assignor_in_use(self, bootstrap: str, group: str) -> str:
        """The assignor the (stable) group chose, as the admin API describes it."""
        raise NotImplementedError

    def admin(self, bootstrap: str) -> "GroupAdmin":
        raise NotImplementedError


class GroupAdmin:
    """The admin API for groups, normalised across clients."""

    def list_groups(self, states: list[str] | None = None) -> dict[str, GroupListing]:
        """Listed groups by id, only those in `states` (Kafka's names) when given."""
        raise NotImplementedError

    def describe(self, group: str) -> GroupDescription:
        raise NotImplementedError

    def delete(self, group: str) -> str:
        """Deletes `group`: "OK", or the Kafka error name (e.g. "NON_EMPTY_GROUP")."""
        raise NotImplementedError

    def committed_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """{(topic, partition): offset} of the group's commits (offsets >= 0 only)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# -- confluent-kafka (librdkafka) ----------------------------------------------------------


class ConfluentMember:
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

    def start(self) -> "ConfluentMember":
        self.thread.start()
        return self

    def _commit(self, consumer, partitions) -> None:
        from confluent_kafka import KafkaException, TopicPartition

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
        from confluent_kafka import Consumer, KafkaError

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

    def diagnostics(self):
        return (self.name, self.exception, self.errors[-3:], self.commit_errors[-3:])

    def __repr__(self) -> str:
        return f"<{self.name} assignment={sorted(self.assignment())}>"


CONFLUENT_CHILD = r"""
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


def _confluent_state(state) -> str:
    """Kafka's name of a ConsumerGroupState ("STABLE" -> "Stable")."""
    return state.name.capitalize()


class ConfluentAdmin(GroupAdmin):
    def __init__(self, bootstrap: str):
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})

    def list_groups(self, states=None):
        from confluent_kafka import ConsumerGroupState

        options = {}
        if states is not None:
            options["states"] = {ConsumerGroupState[s.upper()] for s in states}
        listing = self.admin.list_consumer_groups(request_timeout=15, **options).result(
            timeout=20
        )
        assert not listing.errors, listing.errors
        return {
            g.group_id: GroupListing(
                g.group_id, _confluent_state(g.state), g.is_simple_consumer_group is False
            )
            for g in listing.valid
        }

    def describe(self, group):
        desc = self.admin.describe_consumer_groups([group], request_timeout=15)[group].result(
            timeout=20
        )
        return GroupDescription(
            group_id=desc.group_id,
            error=None,
            state=_confluent_state(desc.state),
            protocol_type="consumer" if desc.is_simple_consumer_group is False else None,
            assignor=desc.partition_assignor,
            coordinator=(desc.coordinator.id, desc.coordinator.port),
            members={
                m.client_id: (
                    m.member_id,
                    frozenset((tp.topic, tp.partition) for tp in m.assignment.topic_partitions),
                )
                for m in desc.members
            },
        )

    def delete(self, group):
        from confluent_kafka import KafkaError, KafkaException

        try:
            self.admin.delete_consumer_groups([group], request_timeout=15)[group].result(
                timeout=20
            )
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == KafkaError.NON_EMPTY_GROUP:
                return "NON_EMPTY_GROUP"
            return error.name()
        return "OK"

    def committed_offsets(self, group):
        from confluent_kafka import ConsumerGroupTopicPartitions

        offsets = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=15
        )[group].result(timeout=20)
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in offsets.topic_partitions
            if tp.offset >= 0
        }


class Confluent(GroupClient):
    name = "confluent-kafka"
    cooperative = True
    child_settle_timeout = 30.0

    def create_topic(self, bootstrap, topic):
        confluent_create_topic(bootstrap, topic, partitions=PARTITIONS)

    def produce(self, bootstrap, topic, count, start=0):
        from confluent_kafka import Producer

        log = DeliveryLog()
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "socket.timeout.ms": 10000})
        for i in range(start, start + count):
            p.produce(topic, value=f"r{i}".encode(), key=f"k{i}".encode(),
                      partition=i % PARTITIONS, on_delivery=log)
        assert p.flush(30) == 0, "records still queued after 30s"
        assert not log.failed, f"delivery failures: {log.failed[:5]}"
        assert len(log.acked) == count
        return {(part, off): value for part, off, _key, value in log.acked}

    def member(self, bootstrap, group, topic, name, **extra):
        return ConfluentMember(bootstrap, group, topic, name, **extra)

    def assignor(self, strategy):
        return {"partition.assignment.strategy": strategy}

    def child_member(self, bootstrap, group, topic):
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": "doomed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        }
        return ChildMember(CONFLUENT_CHILD, conf, topic, stderr=subprocess.STDOUT)

    def _conf(self, bootstrap, group):
        return {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "socket.timeout.ms": 10000,
        }

    def read_and_commit(self, bootstrap, group, topic, count):
        from confluent_kafka import Consumer, TopicPartition

        first = Consumer(self._conf(bootstrap, group))
        reads: list[tuple[int, int]] = []
        try:
            first.subscribe([topic])
            deadline = time.monotonic() + 30
            while len(reads) < count:
                assert time.monotonic() < deadline, f"first member read only {len(reads)}"
                msg = first.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                reads.append((msg.partition(), msg.offset()))
            nxt: dict[int, int] = {}
            for p, off in reads:
                nxt[p] = max(nxt.get(p, 0), off + 1)
            result = first.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in nxt.items()], asynchronous=False
            )
            assert all(tp.error is None for tp in result), f"commit errors: {result}"
        finally:
            first.close()
        return reads, nxt

    def resume(self, bootstrap, group, topic, hw):
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        second = Consumer(self._conf(bootstrap, group))
        reads: list[tuple[int, int]] = []
        try:
            committed = second.committed(
                [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15
            )
            got = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}

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
                reads.append((msg.partition(), msg.offset()))
        finally:
            second.close()
        return got, reads

    def assignor_in_use(self, bootstrap, group):
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": bootstrap})  # keep it alive for the future
        desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result(
            timeout=20
        )
        return desc.partition_assignor

    def admin(self, bootstrap):
        return ConfluentAdmin(bootstrap)


# -- kafka-python --------------------------------------------------------------------------


class KafkaPythonMember:
    """A subscribed KafkaConsumer polled continuously in its own thread, with auto commit."""

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

    def start(self) -> "KafkaPythonMember":
        self.thread.start()
        return self

    def _listener(self):
        """Records the callbacks; does no IO (it runs on kafka-python's IO loop)."""
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        member = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                member.note("revoke", revoked)

            def on_partitions_assigned(self, assigned):
                member.note("assign", assigned)

        return Listener()

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = None
        try:
            consumer = KafkaConsumer(**self.conf)
            consumer.subscribe([self.topic], listener=self._listener())
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

    def diagnostics(self):
        return (self.name, self.exception)

    def __repr__(self) -> str:
        with self.lock:
            return (
                f"<{self.name} assignment={sorted(self._assignment)} "
                f"positions={self._positions}>"
            )


KAFKA_PYTHON_CHILD = r"""
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

#: kafka-python's error names for the codes the scenarios expect, in Kafka's spelling.
_KAFKA_PYTHON_ERRORS = {"NonEmptyGroupError": "NON_EMPTY_GROUP"}


class KafkaPythonAdmin(GroupAdmin):
    def __init__(self, bootstrap: str):
        from kafka import KafkaAdminClient

        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def list_groups(self, states=None):
        groups = (
            self.admin.list_groups()
            if states is None
            else self.admin.list_groups(states_filter=list(states))
        )
        return {
            g["group_id"]: GroupListing(
                g["group_id"], g.get("group_state"), g["protocol_type"] == "consumer"
            )
            for g in groups
        }

    def describe(self, group):
        desc = self.admin.describe_groups([group])[group]
        members = {}
        for m in desc["members"]:
            assignment = m["member_assignment"]
            members[m["client_id"]] = (
                m["member_id"],
                frozenset(
                    (t["topic"], p)
                    for t in assignment["assigned_partitions"]
                    for p in t["partitions"]
                ),
            )
        return GroupDescription(
            group_id=group,
            error=desc["error"],
            state=desc["group_state"],
            protocol_type=desc["protocol_type"],
            assignor=desc["protocol_data"],
            coordinator=None,
            members=members,
        )

    def delete(self, group):
        result = self.admin.delete_groups([group])
        assert set(result) == {group}, result
        return _KAFKA_PYTHON_ERRORS.get(result[group], result[group])

    def committed_offsets(self, group):
        offsets = self.admin.list_group_offsets(group)[group]
        return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items() if om.offset >= 0}

    def close(self):
        self.admin.close()


class KafkaPython(GroupClient):
    name = "kafka-python"
    cooperative = False
    child_settle_timeout = 40.0

    def create_topic(self, bootstrap, topic):
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            # -1: the broker's default replication factor (3 in the test cluster).
            admin.create_topics([NewTopic(topic, PARTITIONS, -1)])
            wait_until(
                lambda: len(admin.describe_topics([topic])[0]["partitions"]) == PARTITIONS,
                timeout=15,
                message=f"{topic} in metadata",
            )
        finally:
            admin.close()

    def produce(self, bootstrap, topic, count, start=0):
        from kafka import KafkaProducer

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

    def member(self, bootstrap, group, topic, name, **extra):
        return KafkaPythonMember(bootstrap, group, topic, name, **extra)

    def assignor(self, strategy):
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        assignors = {a.name: a for a in (RangePartitionAssignor, RoundRobinPartitionAssignor)}
        return {"partition_assignment_strategy": [assignors[strategy]]}

    def child_member(self, bootstrap, group, topic):
        conf = dict(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id="doomed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        )
        return ChildMember(KAFKA_PYTHON_CHILD, conf, topic, stderr=subprocess.DEVNULL)

    def _conf(self, bootstrap, group):
        return dict(
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        )

    def read_and_commit(self, bootstrap, group, topic, count):
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        first = KafkaConsumer(**self._conf(bootstrap, group))
        reads: list[tuple[int, int]] = []
        try:
            first.subscribe([topic])
            deadline = time.monotonic() + 30
            while len(reads) < count:
                assert time.monotonic() < deadline, f"first member read only {len(reads)}"
                for msgs in first.poll(timeout_ms=200, max_records=count - len(reads)).values():
                    reads.extend((m.partition, m.offset) for m in msgs)
            nxt: dict[int, int] = {}
            for p, off in reads:
                nxt[p] = max(nxt.get(p, 0), off + 1)
            first.commit(
                {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in nxt.items()}
            )
        finally:
            first.close(autocommit=False)
        return reads, nxt

    def resume(self, bootstrap, group, topic, hw):
        from kafka import KafkaConsumer, TopicPartition

        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        second = KafkaConsumer(**self._conf(bootstrap, group))
        reads: list[tuple[int, int]] = []
        try:
            got = {tp.partition: second.committed(tp) for tp in tps}
            got = {p: o for p, o in got.items() if o is not None}
            second.subscribe([topic])
            deadline = time.monotonic() + 30
            while True:
                assert time.monotonic() < deadline, f"second member stuck after {len(reads)}"
                for msgs in second.poll(timeout_ms=200).values():
                    reads.extend((m.partition, m.offset) for m in msgs)
                assigned = second.assignment()
                if len(assigned) == PARTITIONS and all(
                    second.position(tp) == hw[tp.partition] for tp in assigned
                ):
                    break
        finally:
            second.close(autocommit=False)
        return got, reads

    def assignor_in_use(self, bootstrap, group):
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            # kafka-python's leader rejoins when its metadata snapshot changed since it
            # assigned (common on a loaded machine), so read the protocol once the group is
            # stable again.
            described = {}

            def stable() -> bool:
                described.update(admin.describe_groups([group])[group])
                return described.get("group_state") == "Stable"

            wait_until(stable, timeout=30, message=lambda: f"group {group} stable: {described}")
            return described["protocol_data"]
        finally:
            admin.close()

    def admin(self, bootstrap):
        return KafkaPythonAdmin(bootstrap)


CONFLUENT = Confluent()
KAFKA_PYTHON = KafkaPython()
#: Every adapter; the scenarios run once per entry.
CLIENTS = [CONFLUENT, KAFKA_PYTHON]

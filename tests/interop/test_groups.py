"""Consumer groups with real clients against a real Millrace broker: each scenario is written
once and run with every client adapter of group_clients.py (confluent-kafka, kafka-python).

Covered: 2 and 3 members on a 6-partition topic (disjoint assignments covering every
partition, every record read once); a member that closes (LeaveGroup) and one that is killed
with SIGKILL in a child process (no LeaveGroup, no heartbeats): the others take over within
the session timeout; committed offsets resumed exactly by a new member; range and roundrobin
assignors; the admin API: list, describe, list offsets and delete groups (NON_EMPTY_GROUP
while active). With the clients that implement it (confluent-kafka): cooperative-sticky
incremental rebalancing.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from group_clients import (
    CLIENTS,
    GROUP_OVERRIDES,
    PARTITIONS,
    SESSION_TIMEOUT_MS,
    TAKEOVER_SLACK_S,
    assert_exactly_once,
    disjoint_cover,
    high_watermarks,
    wait_settled,
)
from support import unique_topic, wait_until

# Every test here runs against one broker and against a three-broker cluster.
pytestmark = pytest.mark.cluster


@pytest.fixture(params=CLIENTS, ids=lambda c: c.name)
def client(request):
    """The client adapter the scenario runs with."""
    return request.param


@pytest.fixture
def members():
    """Collects started members and closes any still running at teardown."""
    started = []
    yield started
    for m in started:
        m._stop.set()
    for m in started:
        m.thread.join(30)


def start_members(client, members_list, bootstrap, group, topic, names, **extra):
    new = [client.member(bootstrap, group, topic, name, **extra) for name in names]
    members_list.extend(new)
    for m in new:
        m.start()
    return new


def setup_topic(client, broker, prefix: str, count: int):
    """A fresh 6-partition topic with `count` records and a fresh group name: (topic, group,
    produced, high watermarks)."""
    topic = unique_topic(prefix)
    client.create_topic(broker.bootstrap, topic)
    produced = client.produce(broker.bootstrap, topic, count)
    return topic, unique_topic("g"), produced, high_watermarks(produced)


# -- scenarios -----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3])
def test_members_get_disjoint_complete_assignments_and_read_each_record_once(
    broker_with, client, members, count
):
    broker = broker_with(GROUP_OVERRIDES)
    topic, group, produced, hw = setup_topic(client, broker, "grp", 600)

    group_members = start_members(
        client, members, broker.bootstrap, group, topic, [f"c{i}" for i in range(count)]
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


def test_member_that_leaves_hands_its_partitions_to_the_others(broker_with, client, members):
    broker = broker_with(GROUP_OVERRIDES)
    topic, group, produced, hw = setup_topic(client, broker, "grp-leave", 300)

    a, b, c = start_members(client, members, broker.bootstrap, group, topic, ["a", "b", "c"])
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
    produced.update(client.produce(broker.bootstrap, topic, 120, start=300))
    hw = high_watermarks(produced)
    wait_settled([a, b], hw)
    for m in (a, b):
        m.check_healthy()
    assert_exactly_once([a, b, c], produced)
    print(f"takeover after LeaveGroup took {took:.2f}s")


def test_member_killed_without_leaving_is_replaced_within_session_timeout(
    broker_with, client, members
):
    broker = broker_with(GROUP_OVERRIDES)
    topic, group, produced, hw = setup_topic(client, broker, "grp-dead", 300)

    a, b = start_members(client, members, broker.bootstrap, group, topic, ["a", "b"])
    child = client.child_member(broker.bootstrap, group, topic)
    try:
        wait_until(
            lambda: disjoint_cover([a.assignment(), b.assignment(), child.assignment()])
            and a.caught_up(hw)
            and b.caught_up(hw),
            timeout=client.child_settle_timeout,
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
    more = client.produce(broker.bootstrap, topic, 60, start=300)
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


def test_committed_offsets_are_resumed_exactly_by_a_new_member(broker_with, client):
    broker = broker_with(GROUP_OVERRIDES)
    topic, group, produced, hw = setup_topic(client, broker, "grp-resume", 240)

    # First member: consume 100 records, commit exactly what it consumed, close.
    first_reads, nxt = client.read_and_commit(broker.bootstrap, group, topic, 100)

    # Second member: committed() shows the commits; reading continues at exactly them.
    got, second_reads = client.resume(broker.bootstrap, group, topic, hw)
    assert got == nxt, f"committed() {got} != what was committed {nxt}"

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


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("range", [{0, 1, 2}, {3, 4, 5}]),
        ("roundrobin", [{0, 2, 4}, {1, 3, 5}]),
    ],
)
def test_range_and_roundrobin_assignors(broker_with, client, members, strategy, expected):
    broker = broker_with(GROUP_OVERRIDES)
    topic, group, produced, hw = setup_topic(client, broker, f"grp-{strategy}", 120)

    a, b = start_members(
        client, members, broker.bootstrap, group, topic, ["a", "b"], **client.assignor(strategy)
    )
    wait_settled([a, b], hw)
    got = sorted([set(a.assignment()), set(b.assignment())], key=min)
    assert got == expected, f"{strategy}: assignments {got}, expected {expected}"

    assert client.assignor_in_use(broker.bootstrap, group) == strategy
    # A member may have rejoined while the group was described (kafka-python's leader does
    # when its metadata changed): the group settles again before the records are counted.
    wait_settled([a, b], hw)
    assert_exactly_once([a, b], produced)
    for m in (a, b):
        m.check_healthy()


def test_admin_lists_describes_and_deletes_groups(broker_with, client, members):
    broker = broker_with(GROUP_OVERRIDES)
    topic, group, produced, hw = setup_topic(client, broker, "grp-admin", 60)

    a, b = start_members(
        client, members, broker.bootstrap, group, topic, ["admin-a", "admin-b"]
    )
    wait_settled([a, b], hw)

    admin = client.admin(broker.bootstrap)
    try:
        # ListGroups: the group, Stable, a consumer (not simple) group; the state filter.
        listing = admin.list_groups()
        assert group in listing, f"group {group} not listed: {sorted(listing)}"
        if listing[group].state is not None:
            assert listing[group].state == "Stable", listing[group]
        assert listing[group].consumer, listing[group]
        stable = admin.list_groups(states=["Stable"])
        empty = admin.list_groups(states=["Empty"])
        assert group in stable, "state filter Stable lost the group"
        assert group not in empty, "state filter ignored"

        # DescribeGroups: state, protocol, coordinator, members and their assignments.
        desc = admin.describe(group)
        assert desc.error is None, desc
        assert desc.group_id == group
        assert desc.state == "Stable"
        assert desc.protocol_type == "consumer"
        assert desc.assignor == "range"
        if desc.coordinator is not None:
            assert desc.coordinator in {(b.node_id, b.port) for b in broker.brokers}, desc.coordinator
        assert set(desc.members) == {"admin-a", "admin-b"}, desc.members
        for member in (a, b):
            member_id, assigned = desc.members[member.name]
            assert member_id, "empty member id"
            assert assigned == {(topic, p) for p in member.assignment()}, (
                f"described assignment of {member.name} {sorted(assigned)} differs from its "
                f"own {sorted(member.assignment())}"
            )

        # Deleting while members are active must fail with NON_EMPTY_GROUP.
        assert admin.delete(group) == "NON_EMPTY_GROUP"

        # Close both: their commits on revoke/close are what the committed offsets show.
        for m in (a, b):
            m.close()
            m.check_healthy()
        offsets = admin.committed_offsets(group)
        got = {p: o for (t, p), o in offsets.items() if t == topic}
        assert got == hw, f"committed offsets {got}, expected the high watermarks {hw}"

        wait_until(
            lambda: admin.describe(group).state == "Empty",
            timeout=15,
            message="group to become Empty after its members closed",
        )
        assert admin.delete(group) == "OK"
        assert group not in admin.list_groups(), "deleted group still listed"
        after = admin.committed_offsets(group)
        assert after == {}, f"offsets survived group deletion: {after}"
    finally:
        admin.close()


# -- clients with cooperative-sticky -------------------------------------------------------


@pytest.mark.parametrize(
    "coop_client", [c for c in CLIENTS if c.cooperative], ids=lambda c: c.name
)
def test_cooperative_sticky_rebalances_incrementally(broker_with, coop_client, members):
    client = coop_client
    broker = broker_with(GROUP_OVERRIDES)
    topic, group, produced, hw = setup_topic(client, broker, "grp-coop", 300)
    coop = client.assignor("cooperative-sticky")

    a, b = start_members(client, members, broker.bootstrap, group, topic, ["a", "b"], **coop)
    wait_settled([a, b], hw)
    before = {"a": set(a.assignment()), "b": set(b.assignment())}
    marks = {m.name: len(m.callbacks) for m in (a, b)}
    history_marks = {m.name: len(m.history) for m in (a, b)}

    (c,) = start_members(client, members, broker.bootstrap, group, topic, ["c"], **coop)
    wait_settled([a, b, c], hw, what="c to join with incremental rebalancing")
    produced.update(client.produce(broker.bootstrap, topic, 120, start=300))
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
        # The client's own view: the kept partitions stayed assigned throughout (an eager
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

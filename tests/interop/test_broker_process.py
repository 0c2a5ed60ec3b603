"""The broker as a process: graceful shutdown, the data-directory lock, and a clean restart
keeping its data.

Single-broker only (no `cluster` mark): these are about one process, its exit code, its lock
and its restart; restarts of cluster members are covered by tests/cluster_faults
(rolling_restart, kill_leader).
"""

from __future__ import annotations

import subprocess

from support import DeliveryLog, confluent_create_topic, confluent_read_all, unique_topic

from confluent_kafka import Producer


def test_sigterm_stops_the_broker_with_exit_code_0(broker):
    assert broker.running
    assert broker.stop() == 0


def test_second_broker_refuses_a_locked_data_dir(broker, broker_factory):
    second = broker_factory(data_dir=broker.data_dir, start=False, name="intruder")
    proc = second.spawn()
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "a second broker on the same data dir kept running\n" + second.log_tail()
        ) from None
    finally:
        second.kill9()
    assert code not in (0, None), f"second broker exited with {code}"
    log = second.log_text().lower()
    assert "lock" in log or str(broker.data_dir).lower() in log, (
        "no clear message about the locked data dir:\n" + second.log_tail()
    )
    assert broker.running, "the first broker must keep running"


def test_graceful_restart_keeps_data_and_continues_offsets(broker):
    topic = unique_topic("restart")
    confluent_create_topic(broker.bootstrap, topic, partitions=2)

    def produce(values, expected_offsets):
        log = DeliveryLog()
        p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False,
                      "acks": "all"})
        for v in values:
            p.produce(topic, value=v, partition=0, on_delivery=log)
        assert p.flush(30) == 0
        assert log.failed == []
        assert [off for _, off, _, _ in log.acked] == expected_offsets

    produce([f"before-{i}".encode() for i in range(50)], list(range(50)))
    assert broker.stop() == 0
    broker.start()
    produce([f"after-{i}".encode() for i in range(5)], list(range(50, 55)))

    back = confluent_read_all(broker.bootstrap, topic, [0, 1])
    assert [r.value for r in back.records] == [f"before-{i}".encode() for i in range(50)] + [
        f"after-{i}".encode() for i in range(5)
    ]
    assert [r.offset for r in back.records] == list(range(55))

"""ACLs with real clients: confluent-kafka's AdminClient creates, describes and deletes ACLs
on a broker with the authorizer on; librdkafka and kafka-python producers and consumers get
Kafka's authorization errors (and write or read nothing) until the ACL that allows them
exists; and `millrace acls add|list|remove` does the same from the command line.

The broker has a SASL_PLAINTEXT listener with PLAIN users admin (a super user), alice and
bob, and a PLAINTEXT listener whose anonymous principal is a super user too: the harness and
the command-line test use it.
"""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from conftest import free_port, millrace_bin
from support import confluent_create_topic, unique_topic

USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture
def secured(broker_factory):
    ports = {"PLAINTEXT": free_port(), "SASL_PLAINTEXT": free_port()}
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            + " ".join(f'user_{u}="{p}"' for u, p in USERS.items()) + ";")
    broker_factory(
        {
            "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.jaas.config": jaas,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": "User:admin;User:ANONYMOUS",
            "group.initial.rebalance.delay.ms": "0",
        },
        port=ports["PLAINTEXT"],
    )
    return ports


def sasl(ports, user: str) -> dict:
    return {
        "bootstrap.servers": f"127.0.0.1:{ports['SASL_PLAINTEXT']}",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": user,
        "sasl.password": USERS[user],
    }


def produce_one(conf: dict, topic: str) -> KafkaError | None:
    """Produces one record; returns the delivery error, if any."""
    errors: list = []
    producer = Producer({**conf, "message.timeout.ms": 10_000})
    producer.produce(topic, b"v", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(15)
    assert errors, "no delivery report"
    return errors[0]


def end_offset(ports, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{ports['PLAINTEXT']}",
                         "group.id": "inspect"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def write_acl(topic: str, user: str) -> AclBinding:
    return AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{user}",
                      "*", AclOperation.WRITE, AclPermissionType.ALLOW)


def test_confluent_admin_manages_acls_and_librdkafka_is_refused_without_them(secured):
    topic = unique_topic("acl")
    confluent_create_topic(f"127.0.0.1:{secured['PLAINTEXT']}", topic)
    admin = AdminClient(sasl(secured, "admin"))

    error = produce_one(sasl(secured, "alice"), topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error
    assert end_offset(secured, topic) == 0

    for future in admin.create_acls([write_acl(topic, "alice")]).values():
        future.result(timeout=15)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    described = admin.describe_acls(everything).result(timeout=15)
    assert [(b.name, b.principal, b.operation) for b in described] == [
        (topic, "User:alice", AclOperation.WRITE)
    ]

    assert produce_one(sasl(secured, "alice"), topic) is None
    assert end_offset(secured, topic) == 1
    # Bob still may not.
    error = produce_one(sasl(secured, "bob"), topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error

    # Alice may not change ACLs.
    alice_admin = AdminClient(sasl(secured, "alice"))
    with pytest.raises(Exception) as refused:
        for future in alice_admin.create_acls([write_acl(topic, "bob")]).values():
            future.result(timeout=15)
    assert "CLUSTER_AUTHORIZATION_FAILED" in str(refused.value) or "authoriz" in str(
        refused.value).lower(), refused.value

    deleted = admin.delete_acls([everything])
    removed = [b for future in deleted.values() for b in future.result(timeout=15)]
    assert len(removed) == 1
    error = produce_one(sasl(secured, "alice"), topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert end_offset(secured, topic) == 1


def test_kafka_python_consumer_without_read_gets_topic_authorization_failed(secured):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    topic = unique_topic("acl-read")
    confluent_create_topic(f"127.0.0.1:{secured['PLAINTEXT']}", topic)
    assert produce_one(sasl(secured, "admin"), topic) is None
    # DESCRIBE but not READ: the topic's metadata and offsets are visible, its records not.
    admin = AdminClient(sasl(secured, "admin"))
    describe = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:bob",
                          "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    for future in admin.create_acls([describe]).values():
        future.result(timeout=15)
    consumer = KafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{secured['SASL_PLAINTEXT']}",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="bob",
        sasl_plain_password=USERS["bob"],
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        with pytest.raises(TopicAuthorizationFailedError):
            consumer.poll(timeout_ms=5_000)
            consumer.poll(timeout_ms=5_000)
    finally:
        consumer.close()


def run_cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(millrace_bin()), *args], capture_output=True, text=True,
                          timeout=60)
    if ok:
        assert proc.returncode == 0, f"millrace {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_millrace_acls_add_list_and_remove(secured):
    topic = unique_topic("acl-cli")
    bootstrap = ["-b", f"127.0.0.1:{secured['PLAINTEXT']}"]
    confluent_create_topic(f"127.0.0.1:{secured['PLAINTEXT']}", topic)

    run_cli("acls", "add", *bootstrap, "--allow-principal", "User:alice", "--producer",
            "--topic", topic)
    listed = run_cli("acls", "list", *bootstrap, "--topic", topic).stdout
    assert f"ResourcePattern(resourceType=TOPIC, name={topic}, patternType=LITERAL)" in listed
    for op in ["WRITE", "DESCRIBE", "CREATE"]:
        assert f"(principal=User:alice, host=*, operation={op}, permissionType=ALLOW)" in listed
    assert produce_one(sasl(secured, "alice"), topic) is None

    refused = run_cli("acls", "add", *bootstrap, "--allow-principal", "User:alice",
                      "--operation", "Reed", "--topic", topic, ok=False)
    assert refused.returncode != 0 and "not an operation" in refused.stderr

    # A non-super user is refused with Kafka's error, named.
    as_alice = run_cli("acls", "list", "-b", f"127.0.0.1:{secured['SASL_PLAINTEXT']}",
                       "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanism=PLAIN",
                       "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret",
                       ok=False)
    assert as_alice.returncode != 0 and "ClusterAuthorizationFailed (code 31)" in as_alice.stderr

    removed = run_cli("acls", "remove", *bootstrap, "--topic", topic, "--force").stdout
    assert "Removed 3 ACL(s)" in removed
    assert run_cli("acls", "list", *bootstrap, "--topic", topic).stdout.strip() == ""
    error = produce_one(sasl(secured, "alice"), topic)
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

"""TLS and SASL with real clients: librdkafka (confluent-kafka), kafka-python, kcat and kafkajs
connect over SSL, SSL with a client certificate, and SASL_SSL with PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512; each produces and reads back. Then the refusals: a wrong password and an
unknown user get an authentication error and write nothing; a plaintext client on a TLS port
is closed, and the broker logs why.

Certificates come from the `openssl` CLI, per test. SCRAM users are created with
`millrace users add` over the broker's PLAINTEXT listener, which the tests also use to look at
what was written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, millrace_bin
from support import confluent_create_topic, unique_topic

OPENSSL = shutil.which("openssl")
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
NODE = shutil.which("node")
NODE_DIR = Path(__file__).resolve().parent / "node"

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

PLAIN_USERS = {"alice": "alice-secret", "admin": "admin-secret"}
SCRAM_USER, SCRAM_PASSWORD = "scram-user", "scram-secret"
COUNT = 20

#: (name, listener, sasl mechanism or None, client certificate?)
MODES = [
    ("ssl", "SSL", None, False),
    ("mtls", "MTLS", None, True),
    ("sasl-plain", "SASL_SSL", "PLAIN", False),
    ("sasl-scram-256", "SASL_SSL", "SCRAM-SHA-256", False),
    ("sasl-scram-512", "SASL_SSL", "SCRAM-SHA-512", False),
]


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"openssl {' '.join(args)}: {proc.stderr}"


@dataclass
class Pki:
    ca: Path
    keystore: Path
    client_cert: Path
    client_key: Path


def make_pki(d: Path) -> Pki:
    """A CA, a broker certificate for 127.0.0.1 and localhost, and a client certificate whose
    subject is O=Millrace, OU=eng, CN=alice."""
    ec = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    openssl("genpkey", *ec, "-out", "ca.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", "ca.key", "-days", "2", "-subj", "/CN=Millrace test CA",
            "-out", "ca.pem", cwd=d)
    for name, subject, ext in [
        ("server", "/CN=broker", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "/O=Millrace/OU=eng/CN=alice", "extendedKeyUsage=clientAuth"),
    ]:
        openssl("genpkey", *ec, "-out", f"{name}.key", cwd=d)
        openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                cwd=d)
    keystore = d / "broker-keystore.pem"
    keystore.write_text((d / "server.key").read_text() + (d / "server.pem").read_text())
    return Pki(ca=d / "ca.pem", keystore=keystore, client_cert=d / "client.pem",
               client_key=d / "client.key")


@dataclass
class SecureBroker:
    broker: object
    pki: Pki
    ports: dict

    def bootstrap(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"


@pytest.fixture
def secure(broker_factory, tmp_path) -> SecureBroker:
    pki = make_pki(tmp_path)
    ports = {name: free_port() for name in ["PLAINTEXT", "SSL", "MTLS", "SASL_SSL"]}
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            + " ".join(f'user_{u}="{p}"' for u, p in PLAIN_USERS.items()) + ";")
    broker = broker_factory(
        {
            "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
            "listener.security.protocol.map":
                "PLAINTEXT:PLAINTEXT,SSL:SSL,MTLS:SSL,SASL_SSL:SASL_SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(pki.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca),
            "listener.name.mtls.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
            "group.initial.rebalance.delay.ms": "0",
        },
        port=ports["PLAINTEXT"],
    )
    # Every listener is bound before the first accepts, but wait for each to be sure.
    for listener, port in ports.items():
        deadline = time.monotonic() + 10
        while True:
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{listener} never listened"
                time.sleep(0.05)
    run_cli("users", "add", SCRAM_USER, "--password", SCRAM_PASSWORD, "--iterations", "4096",
            "-b", f"127.0.0.1:{ports['PLAINTEXT']}")
    return SecureBroker(broker=broker, pki=pki, ports=ports)


def run_cli(*args: str, timeout: float = 60) -> str:
    proc = subprocess.run([str(millrace_bin()), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"millrace {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


def password_of(mechanism: str) -> tuple[str, str]:
    if mechanism == "PLAIN":
        return "alice", PLAIN_USERS["alice"]
    return SCRAM_USER, SCRAM_PASSWORD


def librdkafka_conf(secure: SecureBroker, listener: str, mechanism, cert: bool,
                    password: str | None = None, user: str | None = None) -> dict:
    conf = {
        "bootstrap.servers": secure.bootstrap(listener),
        "security.protocol": "SASL_SSL" if mechanism else "SSL",
        "ssl.ca.location": str(secure.pki.ca),
    }
    if cert:
        conf["ssl.certificate.location"] = str(secure.pki.client_cert)
        conf["ssl.key.location"] = str(secure.pki.client_key)
    if mechanism:
        default_user, default_password = password_of(mechanism)
        conf["sasl.mechanisms"] = mechanism
        conf["sasl.username"] = user or default_user
        conf["sasl.password"] = password or default_password
    return conf


def end_offset(secure: SecureBroker, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": secure.bootstrap("PLAINTEXT"), "group.id": "x"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def new_topic(secure: SecureBroker, prefix: str) -> str:
    topic = unique_topic(prefix)
    confluent_create_topic(secure.bootstrap("PLAINTEXT"), topic, partitions=1)
    return topic


@pytest.mark.parametrize("name,listener,mechanism,cert", MODES, ids=[m[0] for m in MODES])
def test_confluent_kafka_produces_and_consumes(secure, name, listener, mechanism, cert):
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic = new_topic(secure, f"rdk-{name}")
    conf = librdkafka_conf(secure, listener, mechanism, cert)
    producer = Producer(conf)
    delivered = []
    for i in range(COUNT):
        producer.produce(topic, value=f"rdk-{i}".encode(), partition=0,
                         on_delivery=lambda err, msg: delivered.append(err))
    assert producer.flush(30) == 0
    assert delivered == [None] * COUNT

    consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []
    deadline = time.monotonic() + 30
    while len(values) < COUNT and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            values.append(msg.value().decode())
    consumer.close()
    assert values == [f"rdk-{i}" for i in range(COUNT)]


@pytest.mark.parametrize("name,listener,mechanism,cert", MODES, ids=[m[0] for m in MODES])
def test_kafka_python_produces_and_consumes(secure, name, listener, mechanism, cert):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    topic = new_topic(secure, f"kp-{name}")
    conf = {
        "bootstrap_servers": secure.bootstrap(listener),
        "security_protocol": "SASL_SSL" if mechanism else "SSL",
        "ssl_cafile": str(secure.pki.ca),
        "request_timeout_ms": 20000,
    }
    if cert:
        conf["ssl_certfile"] = str(secure.pki.client_cert)
        conf["ssl_keyfile"] = str(secure.pki.client_key)
    if mechanism:
        user, password = password_of(mechanism)
        conf.update(sasl_mechanism=mechanism, sasl_plain_username=user,
                    sasl_plain_password=password)
    producer = KafkaProducer(**conf)
    futures = [producer.send(topic, value=f"kp-{i}".encode(), partition=0) for i in range(COUNT)]
    for f in futures:
        f.get(timeout=30)
    producer.close()

    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", **conf)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    values = []
    deadline = time.monotonic() + 30
    while len(values) < COUNT and time.monotonic() < deadline:
        for msgs in consumer.poll(timeout_ms=500).values():
            values.extend(m.value.decode() for m in msgs)
    consumer.close()
    assert values == [f"kp-{i}" for i in range(COUNT)]


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
@pytest.mark.parametrize("name,listener,mechanism,cert", MODES, ids=[m[0] for m in MODES])
def test_kcat_produces_and_consumes(secure, name, listener, mechanism, cert):
    topic = new_topic(secure, f"kcat-{name}")
    conf = librdkafka_conf(secure, listener, mechanism, cert)
    args = ["-b", conf.pop("bootstrap.servers")]
    for key, value in conf.items():
        args += ["-X", f"{key}={value}"]
    lines = "".join(f"kcat-{i}\n" for i in range(COUNT))
    produced = subprocess.run([KCAT, *args, "-P", "-t", topic, "-p", "0"], input=lines,
                              capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run([KCAT, *args, "-C", "-t", topic, "-p", "0", "-o", "beginning",
                               "-c", str(COUNT), "-e"], capture_output=True, text=True, timeout=60)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [f"kcat-{i}" for i in range(COUNT)]


@pytest.mark.skipif(NODE is None or not (NODE_DIR / "node_modules" / "kafkajs").is_dir(),
                    reason="node or kafkajs is not installed")
@pytest.mark.parametrize("name,listener,mechanism,cert", MODES, ids=[m[0] for m in MODES])
def test_kafkajs_produces_and_consumes(secure, name, listener, mechanism, cert):
    topic = new_topic(secure, f"kjs-{name}")
    settings = {"bootstrap": secure.bootstrap(listener), "topic": topic, "count": COUNT,
                "ca": str(secure.pki.ca)}
    if cert:
        settings.update(cert=str(secure.pki.client_cert), key=str(secure.pki.client_key))
    if mechanism:
        user, password = password_of(mechanism)
        settings["sasl"] = {"mechanism": mechanism.lower(), "username": user,
                            "password": password}
    proc = subprocess.run([NODE, str(NODE_DIR / "security.js"), json.dumps(settings)],
                          capture_output=True, text=True, timeout=90, cwd=NODE_DIR)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["received"] == [f"kafkajs-{i}" for i in range(COUNT)]


@pytest.mark.parametrize("name,listener,mechanism,cert", MODES, ids=[m[0] for m in MODES])
def test_millrace_cli_produces_and_consumes(secure, name, listener, mechanism, cert):
    topic = new_topic(secure, f"cli-{name}")
    conf = librdkafka_conf(secure, listener, mechanism, cert)
    args = ["-b", conf.pop("bootstrap.servers")]
    conf.pop("sasl.mechanisms", None)
    if mechanism:
        conf["sasl.mechanism"] = mechanism
    for key, value in conf.items():
        args += ["-X", f"{key}={value}"]
    lines = "".join(f"cli-{i}\n" for i in range(COUNT))
    produced = subprocess.run([str(millrace_bin()), "produce", "-t", topic, *args], input=lines,
                              capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    assert end_offset(secure, topic) == COUNT


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mechanism,user,password",
    [
        ("PLAIN", "alice", "wrong"),
        ("PLAIN", "mallory", "alice-secret"),
        ("SCRAM-SHA-256", SCRAM_USER, "wrong"),
        ("SCRAM-SHA-512", "mallory", SCRAM_PASSWORD),
    ],
    ids=["plain-wrong-password", "plain-unknown-user", "scram-wrong-password",
         "scram-unknown-user"],
)
def test_librdkafka_bad_credentials_fail_authentication_and_write_nothing(
    secure, mechanism, user, password
):
    from confluent_kafka import KafkaError, Producer

    topic = new_topic(secure, "rdk-refused")
    errors = []
    conf = librdkafka_conf(secure, "SASL_SSL", mechanism, False, password=password, user=user)
    producer = Producer({**conf, "error_cb": errors.append, "message.timeout.ms": 5000})
    delivered = []
    producer.produce(topic, value=b"must not land", partition=0,
                     on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(15)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("Authentication failed" in e.str() for e in errors), errors
    assert len(delivered) == 1 and delivered[0] is not None
    assert end_offset(secure, topic) == 0
    # The broker's own lines (the harness's `=====` lines hold the command line, JAAS included).
    log = "\n".join(l for l in secure.broker.log_text().splitlines() if not l.startswith("====="))
    failures = [l for l in log.splitlines() if "SASL authentication failed" in l]
    assert failures and any(f'user="{user}"' in l or f"user={user}" in l for l in failures), failures
    assert password not in log


def test_kafka_python_wrong_password_fails_authentication_and_writes_nothing(secure, caplog):
    import logging

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    topic = new_topic(secure, "kp-refused")
    caplog.set_level(logging.ERROR, logger="kafka")
    # kafka-python keeps the authentication error per broker and gives up on bootstrapping.
    with pytest.raises(KafkaError):
        producer = KafkaProducer(
            bootstrap_servers=secure.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
            ssl_cafile=str(secure.pki.ca), sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username=SCRAM_USER, sasl_plain_password="wrong",
            request_timeout_ms=10000, max_block_ms=10000)
        producer.send(topic, b"must not land", partition=0).get(timeout=10)
    failures = [r.getMessage() for r in caplog.records if "SaslAuthenticationFailedError" in r.getMessage()]
    assert failures and "Authentication failed" in failures[0], [r.getMessage() for r in caplog.records]
    assert end_offset(secure, topic) == 0


def test_a_plaintext_client_on_a_tls_port_is_closed_and_logged(secure):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    since = secure.broker.log_size()
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=secure.bootstrap("SSL"), request_timeout_ms=5000,
                      max_block_ms=5000)
    deadline = time.monotonic() + 10
    while "TLS handshake failed" not in secure.broker.log_text(since):
        assert time.monotonic() < deadline, secure.broker.log_tail(since=since)
        time.sleep(0.1)
    # The broker is unharmed: plaintext on its own listener still works.
    assert end_offset(secure, new_topic(secure, "after")) == 0

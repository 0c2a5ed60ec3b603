"""SASL/OAUTHBEARER with real clients: signed JWTs (KIP-768, checked against a JWKS file) from
confluent-kafka's `oauth_cb`, a kafka-python token provider, kafkajs's `oauthBearerProvider` and
the `millrace` CLI's file token, over SASL_SSL; librdkafka's unsecured development tokens
(kcat) on a listener in Kafka's unsecured mode; the refusals (an expired token, a token signed
by a key not in the JWKS, an unsecured token on the secured listener) fail authentication and
write nothing; and librdkafka re-authenticating (KIP-368) on a listener whose sessions last two
seconds.

Keys and tokens come from `cryptography` and PyJWT, per test; certificates from `openssl`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, millrace_bin
from support import confluent_create_topic, unique_topic
from test_security import KCAT, NODE, NODE_DIR, OPENSSL, Pki, make_pki

jwt = pytest.importorskip("jwt")
pytest.importorskip("cryptography")

from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from jwt.algorithms import ECAlgorithm, RSAAlgorithm  # noqa: E402

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")

AUDIENCE = "kafka"
ISSUER = "https://idp.example"
VALIDATOR = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
COUNT = 20


@dataclass
class Idp:
    """The tests' identity provider: an RSA and an EC signing key in the JWKS, and an impostor
    key that is not."""

    rsa: object
    ec: object
    impostor: object

    def jwks(self) -> dict:
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
        return {"keys": [{**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                         {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"}]}

    def token(self, sub: str = "alice", key: str = "rsa", **changes) -> str:
        """A signed token for `sub`, valid for an hour; `changes` override claims (None drops
        one)."""
        now = int(time.time())
        claims = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 3600,
                  "scope": "produce consume"}
        for name, value in changes.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        if key == "rsa":
            return jwt.encode(claims, self.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
        signer = self.ec if key == "ec" else self.impostor
        return jwt.encode(claims, signer, algorithm="ES256", headers={"kid": "ec-1"})


@dataclass
class OAuthBroker:
    broker: object
    pki: Pki
    idp: Idp
    ports: dict
    metrics_port: int
    workdir: Path

    def bootstrap(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name):
                    return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no {name} on /metrics")


@pytest.fixture
def oauth(broker_factory, tmp_path) -> OAuthBroker:
    """A broker with PLAINTEXT (for looking), SASL_SSL (signed tokens), REAUTH (signed tokens,
    sessions of 2 s) and DEV (SASL_PLAINTEXT, unsecured tokens) listeners."""
    pki = make_pki(tmp_path)
    idp = Idp(rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
              ec=ec.generate_private_key(ec.SECP256R1()),
              impostor=ec.generate_private_key(ec.SECP256R1()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(idp.jwks()))
    ports = {name: free_port() for name in ["PLAINTEXT", "SASL_SSL", "REAUTH", "DEV"]}
    metrics_port = free_port()
    settings = {
        "listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in ports.items()),
        "listener.security.protocol.map":
            "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,REAUTH:SASL_SSL,DEV:SASL_PLAINTEXT",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.keystore),
        "sasl.enabled.mechanisms": "OAUTHBEARER",
        "sasl.oauthbearer.jwks.endpoint.url": f"file://{jwks}",
        "sasl.oauthbearer.expected.audience": AUDIENCE,
        "sasl.oauthbearer.expected.issuer": ISSUER,
        "metrics.listener": f"http://127.0.0.1:{metrics_port}",
        "group.initial.rebalance.delay.ms": "0",
    }
    for listener in ["sasl_ssl", "reauth"]:
        settings[f"listener.name.{listener}.oauthbearer.sasl.server.callback.handler.class"] = VALIDATOR
        settings[f"listener.name.{listener}.oauthbearer.sasl.jaas.config"] = f"{LOGIN_MODULE} required ;"
    settings["listener.name.reauth.connections.max.reauth.ms"] = "2000"
    settings["listener.name.dev.oauthbearer.sasl.jaas.config"] = (
        f'{LOGIN_MODULE} required unsecuredLoginStringClaim_sub="admin";')
    broker = broker_factory(settings, port=ports["PLAINTEXT"])
    for listener, port in ports.items():
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{listener} never listened"
                time.sleep(0.05)
    return OAuthBroker(broker=broker, pki=pki, idp=idp, ports=ports, metrics_port=metrics_port,
                       workdir=tmp_path)


def new_topic(oauth: OAuthBroker, prefix: str) -> str:
    topic = unique_topic(prefix)
    confluent_create_topic(oauth.bootstrap("PLAINTEXT"), topic, partitions=1)
    return topic


def end_offset(oauth: OAuthBroker, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": oauth.bootstrap("PLAINTEXT"), "group.id": "x"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        consumer.close()


def rdkafka_conf(oauth: OAuthBroker, listener: str, token: str) -> dict:
    def oauth_cb(_config):
        # librdkafka asks again at 80% of the lifetime given here.
        return token, time.time() + 3600

    return {
        "bootstrap.servers": oauth.bootstrap(listener),
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(oauth.pki.ca),
        "sasl.mechanisms": "OAUTHBEARER",
        "oauth_cb": oauth_cb,
    }


def rdkafka_round_trip(conf: dict, topic: str, prefix: str) -> list[str]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer(conf)
    delivered = []
    for i in range(COUNT):
        producer.produce(topic, value=f"{prefix}-{i}".encode(), partition=0,
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
    return values


@pytest.mark.parametrize("key", ["rsa", "ec"], ids=["rs256", "es256"])
def test_confluent_kafka_oauth_cb_produces_and_consumes(oauth, key):
    topic = new_topic(oauth, f"rdk-oauth-{key}")
    conf = rdkafka_conf(oauth, "SASL_SSL", oauth.idp.token(key=key))
    assert rdkafka_round_trip(conf, topic, "rdk") == [f"rdk-{i}" for i in range(COUNT)]


def test_kafka_python_token_provider_produces_and_consumes(oauth):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.net.sasl.oauth import AbstractTokenProvider

    token = oauth.idp.token()

    class Provider(AbstractTokenProvider):
        def token(self):
            return token

    topic = new_topic(oauth, "kp-oauth")
    conf = {
        "bootstrap_servers": oauth.bootstrap("SASL_SSL"),
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(oauth.pki.ca),
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_provider": Provider(),
        "request_timeout_ms": 20000,
    }
    producer = KafkaProducer(**conf)
    for f in [producer.send(topic, value=f"kp-{i}".encode(), partition=0) for i in range(COUNT)]:
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
def test_kcat_unsecured_jwt_on_a_development_listener(oauth):
    topic = new_topic(oauth, "kcat-oauth")
    unsecured = ["-X", "sasl.mechanisms=OAUTHBEARER", "-X", "enable.sasl.oauthbearer.unsecure.jwt=true",
                 "-X", "sasl.oauthbearer.config=principal=alice scope=produce"]
    args = ["-b", oauth.bootstrap("DEV"), "-X", "security.protocol=SASL_PLAINTEXT", *unsecured]
    lines = "".join(f"kcat-{i}\n" for i in range(COUNT))
    produced = subprocess.run([KCAT, *args, "-P", "-t", topic, "-p", "0"], input=lines,
                              capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run([KCAT, *args, "-C", "-t", topic, "-p", "0", "-o", "beginning",
                               "-c", str(COUNT), "-e"], capture_output=True, text=True, timeout=60)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [f"kcat-{i}" for i in range(COUNT)]

    # The same unsigned token on the secured listener is refused, and nothing is written.
    secured = ["-b", oauth.bootstrap("SASL_SSL"), "-X", "security.protocol=SASL_SSL",
               "-X", f"ssl.ca.location={oauth.pki.ca}", *unsecured]
    refused = subprocess.run([KCAT, *secured, "-P", "-t", topic, "-p", "0",
                              "-X", "message.timeout.ms=5000"], input="sneaky\n",
                             capture_output=True, text=True, timeout=60)
    assert "invalid_token" in refused.stderr or "Authentication" in refused.stderr, refused.stderr
    assert end_offset(oauth, topic) == COUNT


@pytest.mark.skipif(NODE is None or not (NODE_DIR / "node_modules" / "kafkajs").is_dir(),
                    reason="node or kafkajs is not installed")
def test_kafkajs_oauth_bearer_provider_produces_and_consumes(oauth):
    topic = new_topic(oauth, "kjs-oauth")
    settings = {"bootstrap": oauth.bootstrap("SASL_SSL"), "topic": topic, "count": COUNT,
                "ca": str(oauth.pki.ca),
                "sasl": {"mechanism": "oauthbearer", "token": oauth.idp.token(key="ec")}}
    proc = subprocess.run([NODE, str(NODE_DIR / "security.js"), json.dumps(settings)],
                          capture_output=True, text=True, timeout=90, cwd=NODE_DIR)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert result["received"] == [f"kafkajs-{i}" for i in range(COUNT)]


def test_millrace_cli_with_a_file_token_produces_and_consumes(oauth):
    topic = new_topic(oauth, "cli-oauth")
    token_file = oauth.workdir / "token"
    token_file.write_text(oauth.idp.token() + "\n")
    args = ["-b", oauth.bootstrap("SASL_SSL"), "-X", "security.protocol=SASL_SSL",
            "-X", f"ssl.ca.location={oauth.pki.ca}", "-X", "sasl.mechanism=OAUTHBEARER",
            "-X", f"sasl.oauthbearer.token.endpoint.url=file://{token_file}"]
    lines = "".join(f"cli-{i}\n" for i in range(COUNT))
    produced = subprocess.run([str(millrace_bin()), "produce", "-t", topic, *args], input=lines,
                              capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run([str(millrace_bin()), "consume", "-t", topic, "-e", *args],
                              capture_output=True, text=True, timeout=60)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [f"cli-{i}" for i in range(COUNT)]

    # An expired token in the file: an authentication error, non-zero exit, nothing written.
    token_file.write_text(oauth.idp.token(exp=int(time.time()) - 120, iat=int(time.time()) - 3600))
    refused = subprocess.run([str(millrace_bin()), "produce", "-t", topic, *args], input="no\n",
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "invalid_token" in refused.stderr, refused.stderr
    assert end_offset(oauth, topic) == COUNT


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": -120},
        {"key": "impostor"},
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
    ],
    ids=["expired", "wrongly-signed", "wrong-audience", "wrong-issuer"],
)
def test_librdkafka_refused_tokens_fail_authentication_and_write_nothing(oauth, changes):
    from confluent_kafka import KafkaError, Producer

    changes = dict(changes)
    if "exp" in changes:
        changes.update(exp=int(time.time()) + changes["exp"], iat=int(time.time()) - 3600)
    token = oauth.idp.token(**changes)
    topic = new_topic(oauth, "rdk-oauth-refused")
    since = oauth.broker.log_size()
    errors = []
    conf = rdkafka_conf(oauth, "SASL_SSL", token)
    producer = Producer({**conf, "error_cb": errors.append, "message.timeout.ms": 5000})
    delivered = []
    producer.produce(topic, value=b"must not land", partition=0,
                     on_delivery=lambda err, msg: delivered.append(err))
    producer.flush(15)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("invalid_token" in e.str() for e in errors), errors
    assert len(delivered) == 1 and delivered[0] is not None
    assert end_offset(oauth, topic) == 0
    # Logged with the client's address and the reason; never the token.
    log = oauth.broker.log_text(since)
    failures = [l for l in log.splitlines() if "SASL authentication failed" in l]
    assert failures and all("client=127.0.0.1:" in l for l in failures), failures
    assert token not in log and token.split(".")[2] not in log


def test_librdkafka_re_authenticates_when_sessions_last_two_seconds(oauth):
    from confluent_kafka import Producer

    topic = new_topic(oauth, "rdk-reauth")
    before = oauth.metric("kafka_server_socket_server_metrics_successful_reauthentication_total")
    delivered = []
    producer = Producer({**rdkafka_conf(oauth, "REAUTH", oauth.idp.token()),
                         "linger.ms": 0, "message.timeout.ms": 10000})
    # Six seconds of a steady trickle: every record lands, on sessions re-authenticated in
    # place (librdkafka does KIP-368 since 2.2).
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 6:
        producer.produce(topic, value=f"r-{sent}".encode(), partition=0,
                         on_delivery=lambda err, msg: delivered.append(err))
        sent += 1
        producer.poll(0.1)
    assert producer.flush(30) == 0
    assert delivered == [None] * sent
    assert end_offset(oauth, topic) == sent
    after = oauth.metric("kafka_server_socket_server_metrics_successful_reauthentication_total")
    assert after - before >= 2, (before, after)


def test_kafka_python_re_authenticates_when_sessions_last_two_seconds(oauth):
    from kafka import KafkaProducer
    from kafka.net.sasl.oauth import AbstractTokenProvider

    token = oauth.idp.token()

    class Provider(AbstractTokenProvider):
        def token(self):
            return token

    topic = new_topic(oauth, "kp-reauth")
    before = oauth.metric("kafka_server_socket_server_metrics_successful_reauthentication_total")
    producer = KafkaProducer(bootstrap_servers=oauth.bootstrap("REAUTH"),
                             security_protocol="SASL_SSL", ssl_cafile=str(oauth.pki.ca),
                             sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Provider(),
                             request_timeout_ms=20000)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 6:
        producer.send(topic, value=f"r-{sent}".encode(), partition=0).get(timeout=20)
        sent += 1
        time.sleep(0.1)  # a steady trickle of traffic, not a synchronisation
    producer.close()
    assert end_offset(oauth, topic) == sent
    after = oauth.metric("kafka_server_socket_server_metrics_successful_reauthentication_total")
    assert after - before >= 2, (before, after)


@pytest.mark.skipif(NODE is None or not (NODE_DIR / "node_modules" / "kafkajs").is_dir(),
                    reason="node or kafkajs is not installed")
def test_kafkajs_re_authenticates_when_sessions_last_two_seconds(oauth):
    topic = new_topic(oauth, "kjs-reauth")
    before = oauth.metric("kafka_server_socket_server_metrics_successful_reauthentication_total")
    opened = oauth.metric("kafka_server_socket_server_metrics_connection_creation_total")
    settings = {"bootstrap": oauth.bootstrap("REAUTH"), "topic": topic, "ca": str(oauth.pki.ca),
                "token": oauth.idp.token(), "durationMs": 6000, "reauthenticationThreshold": 500}
    proc = subprocess.run([NODE, str(NODE_DIR / "reauth.js"), json.dumps(settings)],
                          capture_output=True, text=True, timeout=90, cwd=NODE_DIR)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result
    assert end_offset(oauth, topic) == result["sent"]
    after = oauth.metric("kafka_server_socket_server_metrics_successful_reauthentication_total")
    assert after - before >= 2, (before, after)
    # Re-authenticated in place: kafkajs opened one connection to the broker (end_offset's
    # consumer above connects to the PLAINTEXT listener, counted too).
    connections = oauth.metric("kafka_server_socket_server_metrics_connection_creation_total")
    assert connections - opened <= 3, (opened, connections)

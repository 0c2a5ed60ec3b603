"""Keyed partitioning: `millrace produce -K SEP` puts each key on the partition librdkafka's
`partitioner=murmur2_random` (the Java client's default for keyed records) picks.

For a 6- and a 7-partition topic (7 catches modulo and sign mistakes that 6 can hide), ~500
distinct keys (ASCII, UTF-8 multi-byte, 0-7 and 100+ byte lengths for every tail length of
the 4-byte loop, keys whose murmur2 is negative and whose partition differs between Java's
`toPositive` and `abs`) are produced once with confluent-kafka, recording each delivery
report's partition, and once with the millrace binary to another topic, which is then read
back by assignment. Every key must be on librdkafka's partition. A small pure-Python murmur2
(checked against Kafka's `UtilsTest` vectors) picks the negative-hash keys, checks that the
key set really exercises those cases, and names the Java-expected partition in failures.

Keys never contain the separator ':', '\\n' or '\\r' (a stdin line cannot express them), and
none is NULL (murmur2_random sends NULL keys to random partitions); the empty key is a real,
zero-length key on both sides.
"""

from __future__ import annotations

import random
import subprocess

import pytest
from confluent_kafka import Producer

# Every test here runs against one broker and against a three-broker cluster.
pytestmark = pytest.mark.cluster

from conftest import millrace_bin
from support import DeliveryLog, confluent_create_topic, confluent_read_all, unique_topic

SEP = ":"

# -- reference murmur2 (Java's Utils.murmur2) ----------------------------------------------

_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` as a signed 32-bit int."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    body = length - length % 4
    for i in range(0, body, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & _MASK
        k ^= k >> 24
        k = (k * m) & _MASK
        h = ((h * m) & _MASK) ^ k
    tail = length % 4
    if tail >= 3:
        h ^= data[body + 2] << 16
    if tail >= 2:
        h ^= data[body + 1] << 8
    if tail >= 1:
        h ^= data[body]
        h = (h * m) & _MASK
    h ^= h >> 13
    h = (h * m) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: bytes, partitions: int) -> int:
    """`toPositive(murmur2(key)) % partitions`, the Java default partitioner for keys."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def abs_partition(key: bytes, partitions: int) -> int:
    """The classic mistake: `abs(murmur2(key)) % partitions`."""
    return abs(murmur2(key)) % partitions


# Kafka's UtilsTest.testMurmur2 vectors; if these fail, the reference above is wrong.
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
    (b"", 275646681),
]


def test_reference_murmur2_matches_kafka_vectors():
    for key, expected in KAFKA_VECTORS:
        assert murmur2(key) == expected, key


# -- the keys ------------------------------------------------------------------------------

KEY_COUNT = 500


def _expressible(key: str) -> bool:
    return SEP not in key and "\n" not in key and "\r" not in key


def build_keys() -> list[str]:
    """~500 distinct keys, deterministic, none containing ':', '\\n' or '\\r'."""
    keys: list[str] = []
    seen: set[str] = set()

    def add(k: str) -> None:
        if _expressible(k) and k not in seen:
            seen.add(k)
            keys.append(k)

    # Empty and empty-looking keys, and every tail length 0..7 of the 4-byte loop.
    for k in ["", " ", "  ", "\t", "\x00", "\x00\x00\x00\x00", "0", "null", "None", "\x7f"]:
        add(k)
    for n in range(1, 9):
        add("abcdefgh"[:n])
    # Kafka's own vectors (as text).
    for k, _ in KAFKA_VECTORS:
        add(k.decode())
    # UTF-8 multi-byte: bytes >= 0x80 in the body and in every tail position (a signed-byte
    # mistake shows up here), 2-, 3- and 4-byte sequences, combining marks, odd separators.
    for n in range(1, 9):
        add("é" * n)  # 2 bytes each
        add("日" * n)  # 3 bytes each
        add("🔑" * n)  # 4 bytes each
        add("x" + "ÿ" * n)
    for k in [
        "ключ",
        "キー",
        "鍵-42",
        "🦀rust",
        "Ω≈ç√∫",
        "naïve café",
        "e\u0301",  # e + combining acute
        "\u00a0nbsp",
        "line\u2028sep",
        "nel\x85",
        "tab\there",
        "vt\x0bff\x0c",
        "\ufeffbom",
        "\U0010fffd",
        "ü-key ",
        " trailing-space ",
    ]:
        add(k)
    # Long keys: 100+ bytes with every tail length, multi-byte ones too.
    for n in [100, 101, 102, 103, 127, 128, 129, 255, 256, 1000, 4099]:
        add("L" * n)
    for n in [50, 51, 61, 77]:
        add("ü" * n)  # 100, 102, 122, 154 bytes
    for n in [34, 35, 41]:
        add("日本" * n)
    add("🔑" * 40)
    add("long-key-" + "0123456789" * 30)

    # Keys whose hash is negative and whose partition differs between toPositive and abs
    # for both partition counts used below.
    found = 0
    i = 0
    while found < 60:
        k = f"neg-{i}"
        b = k.encode()
        if murmur2(b) < 0 and all(java_partition(b, n) != abs_partition(b, n) for n in (6, 7)):
            add(k)
            found += 1
        i += 1

    # Plain ASCII in a few shapes, then seeded random ASCII and Unicode strings.
    for i in range(120):
        add(f"user-{i}")
    for i in range(0, 4000, 50):
        add(f"order/{i:08d}")
    rng = random.Random(20240611)
    printable = [chr(c) for c in range(0x20, 0x7F) if chr(c) != SEP]
    while len(keys) < KEY_COUNT - 60:
        add("".join(rng.choice(printable) for _ in range(rng.randint(1, 40))))
    ranges = [(0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
              (0x1F300, 0x1F6FF)]
    while len(keys) < KEY_COUNT:
        chars = []
        for _ in range(rng.randint(1, 30)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        add("".join(chars))
    return keys


KEYS = build_keys()


def test_key_set_exercises_the_edge_cases():
    """The key set itself: distinct, expressible, and covering what it claims to."""
    encoded = [k.encode() for k in KEYS]
    assert len(set(encoded)) == len(KEYS) == KEY_COUNT
    assert all(_expressible(k) for k in KEYS)
    assert b"" in encoded
    assert any(len(b) >= 100 for b in encoded)
    assert any(len(b) != len(k) for b, k in zip(encoded, KEYS)), "no multi-byte UTF-8 keys"
    negative = [b for b in encoded if murmur2(b) < 0]
    assert len(negative) > KEY_COUNT // 3
    for n in (6, 7):
        differs = [b for b in encoded if java_partition(b, n) != abs_partition(b, n)]
        assert len(differs) >= 60, f"only {len(differs)} keys tell toPositive from abs mod {n}"
    # A byte >= 0x80 in the 4-byte body and in each tail length (1-3) of murmur2's loop.
    assert any(len(b) >= 4 and any(x >= 0x80 for x in b[: len(b) - len(b) % 4]) for b in encoded)
    for tail in (1, 2, 3):
        assert any(
            len(b) % 4 == tail and any(x >= 0x80 for x in b[-tail:]) for b in encoded
        ), f"no key with a byte >= 0x80 in a {tail}-byte tail"


# -- producing -----------------------------------------------------------------------------


def librdkafka_partitions(bootstrap: str, topic: str, keys: list[str]) -> dict[int, int]:
    """Produce every key with librdkafka's murmur2_random; {key index: delivered partition}."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": False,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30000,
            "socket.timeout.ms": 10000,
        }
    )
    log = DeliveryLog()
    for i, key in enumerate(keys):
        producer.produce(topic, key=key.encode(), value=str(i).encode(), on_delivery=log)
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} librdkafka messages undelivered after 60 s"
    assert log.failed == [], f"librdkafka delivery failures: {log.failed[:5]}"
    assert len(log.acked) == len(keys)
    out: dict[int, int] = {}
    for partition, _offset, key, value in log.acked:
        i = int(value)
        assert i not in out, f"librdkafka delivered key #{i} twice"
        assert (key or b"") == keys[i].encode(), f"key #{i}: delivery report has {key!r}"
        out[i] = partition
    return out


def millrace_partitions(
    bootstrap: str, topic: str, keys: list[str], partitions: int
) -> dict[int, int]:
    """Produce every key with `millrace produce -K :`, read the topic back;
    {key index: partition it is stored on}."""
    lines = "".join(f"{key}{SEP}{i}\n" for i, key in enumerate(keys))
    proc = subprocess.run(
        [str(millrace_bin()), "produce", "-b", bootstrap, "-t", topic, "-K", SEP],
        input=lines.encode("utf-8"),
        capture_output=True,
        timeout=90,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"millrace produce exited {proc.returncode}:\n{stderr}"
    assert f"{len(keys)} records delivered" in stderr, stderr

    back = confluent_read_all(bootstrap, topic, range(partitions))
    assert back.errors == [], back.errors[:5]
    out: dict[int, int] = {}
    for r in back.records:
        i = int(r.value)
        assert i not in out, f"key #{i} ({keys[i]!r}) stored twice: partitions {out[i]}, {r.partition}"
        # The empty key must come back as a zero-length key, not NULL.
        assert r.key == keys[i].encode(), f"key #{i}: stored key {r.key!r}, sent {keys[i]!r}"
        out[i] = r.partition
    assert sorted(out) == list(range(len(keys))), (
        f"{len(keys) - len(out)} keys missing from {topic}"
    )
    return out


@pytest.mark.parametrize("partitions", [6, 7])
def test_millrace_keyed_partitions_match_librdkafka_murmur2_random(broker, partitions):
    reference_topic = unique_topic(f"part-rdkafka-{partitions}")
    millrace_topic = unique_topic(f"part-millrace-{partitions}")
    for topic in (reference_topic, millrace_topic):
        confluent_create_topic(broker.bootstrap, topic, partitions=partitions)

    expected = librdkafka_partitions(broker.bootstrap, reference_topic, KEYS)
    # Not vacuous: the keys spread over every partition.
    assert set(expected.values()) == set(range(partitions))

    actual = millrace_partitions(broker.bootstrap, millrace_topic, KEYS, partitions)

    mismatches = [
        (KEYS[i], expected[i], actual[i], java_partition(KEYS[i].encode(), partitions))
        for i in range(len(KEYS))
        if actual[i] != expected[i]
    ]
    assert not mismatches, (
        f"{len(mismatches)} of {len(KEYS)} keys on a different partition than librdkafka "
        f"(of {partitions}); (key, librdkafka, millrace, java reference): {mismatches[:20]}"
    )

    # librdkafka itself agrees with the Java formula (so the empty key was hashed, not
    # treated as NULL and sent to a random partition).
    off_java = [
        (KEYS[i], expected[i], java_partition(KEYS[i].encode(), partitions))
        for i in range(len(KEYS))
        if expected[i] != java_partition(KEYS[i].encode(), partitions)
    ]
    assert not off_java, f"librdkafka differs from Java's murmur2: {off_java[:20]}"

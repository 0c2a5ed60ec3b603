"""The Parquet files of `millrace connect` (the Parquet sink) and `millrace export`, read back
by tools that did not write them: pyarrow and DuckDB. Then the sink's exactly-once promise
under `kill -9`: the sink process is killed at random points while it consumes a topic of
known content, restarted, and at the end the union of its files is exactly the topic.

The binary is found like the broker's (see conftest.py: `$MILLRACE_BIN` or the release build
under `$CARGO_TARGET_DIR`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from conftest import millrace_bin
from support import confluent_create_topic, unique_topic, wait_until

#: 2026-11-25T10:00:00Z in ms.
BASE_MS = 1_795_600_800_000
HOUR_MS = 3_600_000
COUNTRIES = ("DE", "FR", "US")
#: The Hive partition columns of the layout, all strings in the paths.
PARTITION_COLUMNS = ("topic", "dt", "hour", "country")
# Every test here runs against one broker and against a three-broker cluster.
pytestmark = pytest.mark.cluster

#: Groups form at once: the sink is the only member.
BROKER_OVERRIDES = {"group.initial.rebalance.delay.ms": "0"}


def event(i: int, total: int) -> dict:
    """Record `i` of a topic of `total`: every column type the sink infers, a field that is
    sometimes missing (a nullable column), a nested object (a JSON text column), spread over
    three hours and three countries."""
    e = {
        "id": i,
        "ts": BASE_MS + i * 3 * HOUR_MS // total,
        "country": COUNTRIES[i % 3],
        "path": f"/p/{i}?q=\u00e9\u00df",
        "price": i / 4,  # floats, exact in binary
        "ok": i % 5 == 0,
        "tags": {"n": i, "even": i % 2 == 0},
    }
    if i % 7 == 0:
        e["ref"] = f"r{i}"
    return e


def expected_partition(e: dict) -> dict:
    t = dt.datetime.fromtimestamp(e["ts"] / 1000, tz=dt.timezone.utc)
    return {"dt": t.strftime("%Y-%m-%d"), "hour": t.strftime("%H"), "country": e["country"]}


def produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    """Produces `values` round-robin over `partitions`, acks=all, and checks every one
    arrived: value i lands in partition i % partitions at offset i // partitions."""
    acked: list[tuple[int, int]] = []
    failed: list[str] = []

    def report(err, msg):
        if err is not None:
            failed.append(str(err))
        else:
            acked.append((msg.partition(), msg.offset()))

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for i, value in enumerate(values):
        while True:
            try:
                p.produce(topic, value=value, partition=i % partitions, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    assert not failed, failed[:3]
    assert sorted(acked) == sorted((i % partitions, i // partitions) for i in range(len(values)))


def parquet_files(out: Path) -> list[Path]:
    """Committed files: `.parquet` files outside the sink's `_millrace/` state directory."""
    return sorted(
        p for p in out.rglob("*.parquet") if "_millrace" not in p.relative_to(out).parts
    )


def committed_rows(out: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in parquet_files(out))


def write_sink_config(path: Path, bootstrap: str, topic: str, out: Path, extra: str = "") -> None:
    path.write_text(
        f"""
[[parquet_sink]]
name = "interop"
bootstrap = "{bootstrap}"
topics = ["{topic}"]
out = "{out}"
time_field = "ts"
partition_by = ["country"]
group_instance_id = "interop-1"
session_timeout_ms = 6000
{extra}
"""
    )


class SinkProcess:
    """`millrace connect --config FILE` as a child process, its log in a file."""

    def __init__(self, config: Path, log: Path):
        self.config = config
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SinkProcess":
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(millrace_bin()), "connect", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM (the sink closes and commits its open files), then the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
                raise AssertionError(f"sink ignored SIGTERM; log:\n{self.log_tail()}")
        return self.proc.returncode

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@pytest.fixture
def sinks():
    """Sink processes started by a test; any still running at teardown are killed."""
    started: list[SinkProcess] = []
    yield started
    for sink in started:
        if sink.alive():
            sink.kill9()


def read_with_pyarrow(out: Path) -> pa.Table:
    # Explicit string partition columns: the test checks the path values as written, not
    # pyarrow's guess at their types. `_millrace/` is skipped (pyarrow ignores `_` prefixes).
    partitioning = pads.partitioning(
        pa.schema([(c, pa.string()) for c in PARTITION_COLUMNS]), flavor="hive"
    )
    return pads.dataset(str(out), format="parquet", partitioning=partitioning).to_table()


def duckdb_files(out: Path) -> str:
    """DuckDB's table function over the committed files, partition columns as text."""
    glob = f"{out}/topic=*/dt=*/hour=*/country=*/*.parquet".replace("'", "''")
    return f"read_parquet('{glob}', hive_partitioning = true, hive_types_autocast = false)"


def read_with_duckdb(out: Path) -> list[dict]:
    con = duckdb.connect()
    try:
        rel = con.execute(f"SELECT * FROM {duckdb_files(out)}")
        names = [d[0] for d in rel.description]
        return [dict(zip(names, row)) for row in rel.fetchall()]
    finally:
        con.close()


def check_rows(rows: list[dict], events: list[dict], topic: str, reader: str) -> None:
    """`rows` (one dict per row, partition columns included) hold exactly `events`."""
    assert len(rows) == len(events), f"{reader}: {len(rows)} rows, {len(events)} produced"
    by_id = {}
    for row in rows:
        assert row["id"] not in by_id, f"{reader}: id {row['id']} twice"
        by_id[row["id"]] = row
    for e in events:
        row = by_id.get(e["id"])
        assert row is not None, f"{reader}: id {e['id']} missing"
        got = {
            "ts": row["ts"],
            "path": row["path"],
            "price": row["price"],
            "ok": row["ok"],
            "tags": json.loads(row["tags"]),
            "ref": row["ref"],
        }
        want = {
            "ts": e["ts"],
            "path": e["path"],
            "price": e["price"],
            "ok": e["ok"],
            "tags": e["tags"],
            "ref": e.get("ref"),
        }
        assert got == want, f"{reader}: id {e['id']}"
        partition = {c: str(row[c]) for c in ("dt", "hour", "country")}
        assert partition == expected_partition(e), f"{reader}: id {e['id']} directories"
        assert row["topic"] == topic, reader


def check_both_readers(out: Path, events: list[dict], topic: str) -> None:
    table = read_with_pyarrow(out)
    # Partition fields live in the path only (Hive style), never twice.
    file_columns = set(pq.read_schema(parquet_files(out)[0]).names)
    assert "country" not in file_columns
    assert {"id", "ts", "path", "price", "ok", "tags", "ref"} <= file_columns
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("price").type == pa.float64()
    assert table.schema.field("ok").type == pa.bool_()
    check_rows(table.to_pylist(), events, topic, "pyarrow")

    rows = read_with_duckdb(out)
    check_rows(rows, events, topic, "duckdb")

    # DuckDB's own aggregation over the partition columns agrees with the producer's view.
    con = duckdb.connect()
    try:
        counted = con.execute(
            f"SELECT dt, hour, country, count(*) FROM {duckdb_files(out)} GROUP BY ALL"
        ).fetchall()
    finally:
        con.close()
    want = Counter(tuple(expected_partition(e).values()) for e in events)
    assert {(d, h, c): n for d, h, c, n in counted} == dict(want)


def make_topic(broker, partitions: int, total: int) -> tuple[str, list[dict]]:
    topic = unique_topic("views")
    confluent_create_topic(broker.bootstrap, topic, partitions=partitions)
    events = [event(i, total) for i in range(total)]
    produce(broker.bootstrap, topic, [json.dumps(e).encode() for e in events], partitions)
    return topic, events


def test_sink_files_read_back_with_pyarrow_and_duckdb(broker_with, sinks, tmp_path):
    broker = broker_with(BROKER_OVERRIDES)
    topic, events = make_topic(broker, partitions=3, total=3000)
    out = tmp_path / "lake"
    config = tmp_path / "connect.toml"
    write_sink_config(
        config,
        broker.bootstrap,
        topic,
        out,
        "codec = \"snappy\"\nrow_group_rows = 100\n"
        "[parquet_sink.rolling]\nmax_records = 400\nmax_open_ms = 300\n"
        "[parquet_sink.schema]\ninfer_records = 50\n",
    )
    sink = SinkProcess(config, tmp_path / "sink.log").start()
    sinks.append(sink)
    wait_until(
        lambda: committed_rows(out) == len(events) or not sink.alive(),
        timeout=60,
        message=lambda: f"{len(events)} rows committed; sink log:\n{sink.log_tail()}",
    )
    assert sink.stop() == 0, sink.log_tail()
    assert len(parquet_files(out)) >= len(events) // 400
    check_both_readers(out, events, topic)


def test_export_files_read_back_with_pyarrow_and_duckdb(broker_with, tmp_path):
    broker = broker_with(BROKER_OVERRIDES)
    topic, events = make_topic(broker, partitions=2, total=2000)
    out = tmp_path / "export"
    result = subprocess.run(
        [
            str(millrace_bin()),
            "export",
            "--bootstrap",
            broker.bootstrap,
            "--topic",
            topic,
            "--out",
            str(out),
            "--time-field",
            "ts",
            "--partition-by",
            "country",
            "--max-records-per-file",
            "300",
            "--infer-records",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"exported {len(events)} records to "), result.stdout
    check_both_readers(out, events, topic)


# -- crash test ----------------------------------------------------------------------------

#: Runs killed with SIGKILL before the final clean run.
CRASH_RUNS = 6
CRASH_TOTAL = 24_000
CRASH_PARTITIONS = 3


def committed_files(out: Path) -> set[Path]:
    return set(parquet_files(out))


def test_sink_killed_at_random_points_writes_the_topic_exactly_once(
    broker_with, sinks, tmp_path
):
    seed = int(os.environ.get("MILLRACE_CRASH_SEED", random.randrange(2**32)))
    print(f"crash test seed {seed} (rerun with MILLRACE_CRASH_SEED={seed})")
    rng = random.Random(seed)
    broker = broker_with(BROKER_OVERRIDES)
    topic, events = make_topic(broker, partitions=CRASH_PARTITIONS, total=CRASH_TOTAL)
    out = tmp_path / "lake"
    config = tmp_path / "connect.toml"
    # Small files and row groups: a commit every few dozen records, so a kill lands inside
    # a file being written, between a commit line and its renames, or in recovery.
    write_sink_config(
        config,
        broker.bootstrap,
        topic,
        out,
        "kafka_metadata = true\nrow_group_rows = 16\n"
        f"[parquet_sink.rolling]\nmax_records = {rng.randint(20, 60)}\nmax_open_ms = 200\n"
        "[parquet_sink.schema]\ninfer_records = 100\n",
    )
    log = tmp_path / "sink.log"
    kills = []
    for run in range(CRASH_RUNS):
        before = committed_files(out)
        sink = SinkProcess(config, log).start()
        sinks.append(sink)
        # Kill once this run has committed something (so every run makes progress and the
        # kill hits a sink in full flow), after a random extra delay.
        wait_until(
            lambda: len(committed_files(out) - before) > 0 or not sink.alive(),
            timeout=60,
            interval=0.02,
            message=lambda: f"run {run} to commit a file; log:\n{sink.log_tail()}",
        )
        assert sink.alive(), f"sink exited in run {run}:\n{sink.log_tail()}"
        delay = rng.uniform(0.0, 0.4)
        time.sleep(delay)  # the random kill point, not a synchronisation
        sink.kill9()
        rows = committed_rows(out)
        kills.append((run, round(delay, 3), rows))
    print(f"kills (run, delay s, rows committed at the kill): {kills}")
    assert any(rows < CRASH_TOTAL for _, _, rows in kills), "every kill came after the end"

    sink = SinkProcess(config, log).start()
    sinks.append(sink)
    wait_until(
        lambda: committed_rows(out) >= CRASH_TOTAL or not sink.alive(),
        timeout=120,
        message=lambda: f"all rows after the last restart; log:\n{sink.log_tail()}",
    )
    assert sink.stop() == 0, sink.log_tail()

    table = read_with_pyarrow(out)
    got = Counter(
        zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist())
    )
    dupes = [po for po, n in got.items() if n > 1]
    assert not dupes, f"{len(dupes)} records written twice, e.g. {sorted(dupes)[:5]}"
    want = {(i % CRASH_PARTITIONS, i // CRASH_PARTITIONS) for i in range(CRASH_TOTAL)}
    missing = sorted(want - set(got))
    extra = sorted(set(got) - want)
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    # And each row is the record at its offset, not just the right count.
    ids = table.column("id").to_pylist()
    for (partition, offset), i in zip(
        zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist()),
        ids,
    ):
        assert (partition, offset) == (i % CRASH_PARTITIONS, i // CRASH_PARTITIONS)
    # Nothing half-written was left in the output tree.
    stray = [
        p
        for p in out.rglob("*")
        if p.is_file() and "_millrace" not in p.relative_to(out).parts and p.suffix != ".parquet"
    ]
    assert not stray, stray[:5]

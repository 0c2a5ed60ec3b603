"""Fixtures that run a real `millrace broker` process for the interop tests.

Every test gets its own broker on a free port with a fresh data directory under pytest's
`tmp_path`; tests marked `cluster` run a second time against a three-broker cluster shared by
the session (see `ClusterPool`). The broker's stderr (tracing logs) goes to `broker.log` in that directory and is
attached to the report of a failing test. Brokers are always stopped at teardown, and any that
survive an interrupted run are killed when the Python process exits.

The binary is `$MILLRACE_BIN` if set, else `<target dir>/release/millrace`, where the target
dir is `$CARGO_TARGET_DIR` if set, else `target/` in the repository root.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: How long to wait for a started broker to accept TCP connections.
READY_DEADLINE_S = 30.0
#: How long `stop()` waits after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 10.0
#: How many trailing lines of broker log to attach to a failing test's report.
LOG_TAIL_LINES = 400

_LIVE_BROKERS: set["BrokerProcess"] = set()


def millrace_bin() -> Path:
    """Where the broker binary is, following the rules in the module doc."""
    explicit = os.environ.get("MILLRACE_BIN")
    if explicit:
        return Path(explicit).resolve()
    target = os.environ.get("CARGO_TARGET_DIR")
    target_dir = Path(target) if target else REPO_ROOT / "target"
    if not target_dir.is_absolute():
        # cargo resolves a relative CARGO_TARGET_DIR against its working directory; the
        # test command runs cargo from the repository root.
        target_dir = REPO_ROOT / target_dir
    return target_dir / "release" / "millrace"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


class BrokerStartError(AssertionError):
    """The broker process exited or never listened; the message carries its log."""


class BrokerProcess:
    """One `millrace broker` process, restartable on the same port and data directory."""

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        port: int | None = None,
        overrides: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        config_file: Path | None = None,
        data_dir: Path | None = None,
        name: str = "broker",
    ):
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.data_dir = data_dir if data_dir is not None else workdir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        items = overrides.items() if isinstance(overrides, Mapping) else overrides
        self.overrides = [(str(k), str(v)) for k, v in items]
        self.config_file = config_file
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.last_exit_code: int | None = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "broker",
            "--listen",
            self.bootstrap,
            "--data-dir",
            str(self.data_dir),
        ]
        if self.config_file is not None:
            cmd += ["--config", str(self.config_file)]
        for key, value in self.overrides:
            cmd += ["--override", f"{key}={value}"]
        return cmd

    def spawn(self) -> subprocess.Popen:
        """Start the process without waiting for it to listen (see `start`)."""
        if not self.binary.exists():
            raise BrokerStartError(
                f"millrace binary not found at {self.binary}; build it with "
                "`cargo build --release --bin millrace` or set MILLRACE_BIN"
            )
        assert not self.running, "broker already running"
        self.starts += 1
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")  # plain log text in reports
        with open(self.log_path, "ab") as log:
            log.write(
                f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode()
            )
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.data_dir.parent,
            )
        _LIVE_BROKERS.add(self)
        return self.proc

    def start(self) -> "BrokerProcess":
        """Start the process and wait until its port accepts TCP connections."""
        proc = self.spawn()
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            code = proc.poll()
            if code is not None:
                self._reaped(code)
                raise BrokerStartError(
                    f"millrace broker exited with code {code} before listening on "
                    f"{self.bootstrap}\n--- broker log ---\n{self.log_tail()}"
                )
            if port_accepts(self.port):
                return self
            if time.monotonic() > deadline:
                self.kill9()
                raise BrokerStartError(
                    f"millrace broker did not accept connections on {self.bootstrap} "
                    f"within {READY_DEADLINE_S:.0f}s\n--- broker log ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit code
        (negative for a signal, as in `subprocess`), or None if nothing was running."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._note(f"did not exit {grace:.0f}s after SIGTERM; sending SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=30)
        return self._reaped(self.proc.returncode)

    def kill9(self) -> int | None:
        """SIGKILL the process (a crash: no chance to flush or clean up) and reap it."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        return self._reaped(self.proc.returncode)

    def restart(self, graceful: bool = True) -> "BrokerProcess":
        """Stop (SIGTERM, or SIGKILL if not `graceful`) and start again on the same port and
        data directory."""
        if self.running:
            if graceful:
                self.stop()
            else:
                self.kill9()
        return self.start()

    def _reaped(self, code: int) -> int:
        self.last_exit_code = code
        self._note(f"exited with code {code}")
        self.proc = None
        _LIVE_BROKERS.discard(self)
        return code

    def _note(self, text: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"===== [test harness] broker {text}\n".encode())

    # -- logs ------------------------------------------------------------------------------

    def log_text(self, since: int = 0) -> str:
        """The log from byte offset `since` (see `log_size`) on."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_tail(self, lines: int = LOG_TAIL_LINES, since: int = 0) -> str:
        text = self.log_text(since).splitlines()
        if len(text) > lines:
            return f"[... {len(text) - lines} earlier lines in {self.log_path}]\n" + "\n".join(
                text[-lines:]
            )
        return "\n".join(text)

    # -- the same shape as a cluster -------------------------------------------------------

    @property
    def node_id(self) -> int:
        """The broker's `node.id` (1 unless overridden, as in a single-broker setup)."""
        return int(dict(self.overrides).get("node.id", "1"))

    @property
    def brokers(self) -> list["BrokerProcess"]:
        """Itself: tests written for both shapes iterate over `broker.brokers`."""
        return [self]

    def port_of(self, node_id: int) -> int:
        assert node_id == self.node_id, f"no broker with node id {node_id}"
        return self.port

    def __repr__(self) -> str:
        return f"BrokerProcess({self.bootstrap}, data_dir={self.data_dir}, pid={self.pid})"


@atexit.register
def _kill_leftover_brokers() -> None:
    for broker in list(_LIVE_BROKERS):
        try:
            broker.kill9()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


# -- fixtures ------------------------------------------------------------------------------

#: The brokers a test used, each with the size its log had when the test took it (a shared
#: cluster's log also holds earlier tests' lines, which a failure report leaves out).
_BROKERS_KEY = pytest.StashKey[list]()


def _register(request: pytest.FixtureRequest, broker: BrokerProcess) -> None:
    request.node.stash.setdefault(_BROKERS_KEY, []).append((broker, broker.log_size()))


@pytest.fixture
def broker_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., BrokerProcess]:
    """Start brokers with settings: `broker_factory({"auto.create.topics.enable": "false"})`.

    Keyword arguments go to `BrokerProcess` (`port=`, `data_dir=`, `config_file=`, `name=`);
    pass `start=False` to get an unstarted broker. Every broker is stopped at teardown.
    """
    binary = millrace_bin()
    started: list[BrokerProcess] = []

    def make(overrides=(), *, start: bool = True, name: str | None = None, **kwargs):
        broker = BrokerProcess(
            binary, tmp_path, overrides=overrides, name=name or f"broker{len(started)}", **kwargs
        )
        started.append(broker)
        _register(request, broker)
        return broker.start() if start else broker

    yield make

    # A broker must survive the test (unless the test stopped or killed it itself) and exit
    # with code 0 on SIGTERM; anything else is a broker bug worth an error here.
    problems = []
    for broker in started:
        crashed = broker.proc is not None and broker.proc.poll() is not None
        was_running = broker.running
        code = broker.stop()
        if crashed:
            problems.append(f"{broker!r} exited on its own during the test with code {code}")
        elif was_running and code != 0:
            problems.append(f"{broker!r} exited with code {code} on SIGTERM at teardown")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


class BrokerCluster:
    """Several `millrace broker` processes forming one cluster (each a voter of the metadata
    quorum), started together; tests that only need `bootstrap` run against it unchanged."""

    def __init__(self, brokers: list[BrokerProcess]):
        self.brokers = brokers

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    @property
    def running(self) -> bool:
        return all(b.running for b in self.brokers)

    def port_of(self, node_id: int) -> int:
        [port] = [b.port for b in self.brokers if b.node_id == node_id]
        return port

    def stop(self) -> list[str]:
        """Stops every broker (SIGTERM); returns what went wrong (an exit code other than 0)."""
        problems = []
        for b in self.brokers:
            was_running = b.running
            code = b.stop()
            if was_running and code != 0:
                problems.append(f"{b!r} exited with code {code} on SIGTERM")
        return problems

    def __repr__(self) -> str:
        return f"BrokerCluster({self.bootstrap})"


#: How long a cluster may take until every broker has joined the quorum and serves.
CLUSTER_READY_DEADLINE_S = 60.0


def start_cluster(make: Callable[..., BrokerProcess], size: int = 3, overrides=()) -> BrokerCluster:
    """Starts `size` brokers of one cluster with `broker_factory`'s `make`: all are spawned
    before any is waited for (the quorum needs a majority), then each must log that it listens
    (which it does once registered with the controller and unfenced)."""
    ports = [free_port() for _ in range(size)]
    controller_ports = [free_port() for _ in range(size)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{controller_ports[i]}" for i in range(size))
    brokers = []
    for i in range(size):
        settings = {
            "node.id": str(i + 1),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{ports[i]},CONTROLLER://127.0.0.1:{controller_ports[i]}",
            "controller.listener.names": "CONTROLLER",
            "default.replication.factor": str(size),
            "min.insync.replicas": str(max(1, size - 1)),
        }
        settings.update(dict(overrides))
        brokers.append(make(settings, start=False, name=f"cluster-broker{i + 1}", port=ports[i]))
    for broker in brokers:
        broker.spawn()
    deadline = time.monotonic() + CLUSTER_READY_DEADLINE_S
    for broker in brokers:
        while "broker listening" not in broker.log_text():
            code = broker.proc.poll() if broker.proc else None
            if code is not None:
                broker._reaped(code)
                raise BrokerStartError(
                    f"cluster broker exited with code {code}\n--- broker log ---\n{broker.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BrokerStartError(
                    f"cluster broker {broker.bootstrap} did not serve within "
                    f"{CLUSTER_READY_DEADLINE_S:.0f}s\n--- broker log ---\n{broker.log_tail()}"
                )
            time.sleep(0.05)
    return BrokerCluster(brokers)


#: How many shared clusters (one per distinct set of settings) stay up at once; when another
#: is needed, the least recently used one is stopped, but never the one with default
#: settings, which most modules come back to.
MAX_SHARED_CLUSTERS = 2


class ClusterPool:
    """Three-broker clusters shared by the tests of a session, one per distinct set of
    settings. Starting and stopping a cluster costs about 3 s, and every test works on topics
    and groups of its own (`unique_topic`), so tests need not have a cluster of their own.

    A cluster in which a broker died is replaced (the test during which it died fails, see
    `broker_with`); brokers that exit non-zero on SIGTERM are reported at the end."""

    def __init__(self, binary: Path, root: Path):
        self.binary = binary
        self.root = root
        self.clusters: dict[tuple, BrokerCluster] = {}
        self.started = 0
        self.problems: list[str] = []

    def get(self, overrides: Mapping[str, str]) -> BrokerCluster:
        key = tuple(sorted((str(k), str(v)) for k, v in overrides.items()))
        cluster = self.clusters.pop(key, None)
        if cluster is not None and not cluster.running:
            self.problems += cluster.stop()
            cluster = None
        if cluster is None:
            while len(self.clusters) >= MAX_SHARED_CLUSTERS:
                oldest = next((k for k in self.clusters if k), next(iter(self.clusters)))
                self.problems += self.clusters.pop(oldest).stop()
            self.started += 1
            workdir = self.root / f"cluster{self.started}"
            workdir.mkdir(parents=True, exist_ok=True)

            def make(settings, *, start: bool = False, name: str, port: int) -> BrokerProcess:
                broker = BrokerProcess(self.binary, workdir, port=port, overrides=settings, name=name)
                return broker.start() if start else broker

            cluster = start_cluster(make, overrides=overrides)
        # Most recently used last.
        self.clusters[key] = cluster
        return cluster

    def close(self) -> list[str]:
        for cluster in self.clusters.values():
            self.problems += cluster.stop()
        self.clusters.clear()
        return self.problems


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: also run the test against a three-broker cluster (replication factor 3, "
        "min.insync.replicas 2), through the `broker` and `broker_with` fixtures",
    )


def pytest_generate_tests(metafunc) -> None:
    # Tests marked `cluster` (or in a module marked so) run twice: one broker, then a cluster.
    uses_broker = {"broker", "broker_with"} & set(metafunc.fixturenames)
    if uses_broker and metafunc.definition.get_closest_marker("cluster"):
        metafunc.parametrize("broker_shape", ["single", "cluster"])


@pytest.fixture
def broker_shape() -> str:
    """One broker unless the test is marked `cluster` (see `pytest_generate_tests`)."""
    return "single"


@pytest.fixture(scope="session")
def cluster_pool(tmp_path_factory):
    pool = ClusterPool(millrace_bin(), tmp_path_factory.mktemp("clusters"))
    yield pool
    problems = pool.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def broker_with(request, broker_factory, broker_shape, cluster_pool):
    """`broker_with(overrides)`: a broker started with those settings, or for tests marked
    `cluster` also a shared three-broker cluster with them. Both have `bootstrap`, `brokers`
    (the processes, each with `node_id` and `port`) and `port_of(node_id)`."""
    used: list[BrokerCluster] = []
    used_single: list[BrokerProcess] = []

    def make(overrides: Mapping[str, str] | None = None):
        overrides = overrides or {}
        if broker_shape == "cluster":
            cluster = cluster_pool.get(overrides)
            used.append(cluster)
            for b in cluster.brokers:
                _register(request, b)
            return cluster
        # The first one's log is `broker.log`, as with the `broker` fixture.
        single = broker_factory(overrides, name=None if used_single else "broker")
        used_single.append(single)
        return single

    yield make

    # A shared cluster must survive every test, like a broker of `broker_factory`.
    dead = [b for c in used for b in c.brokers if not b.running]
    if dead:
        pytest.fail(
            "\n".join(f"{b!r} exited on its own during the test" for b in dead), pytrace=False
        )


@pytest.fixture
def broker(broker_with):
    """A broker with default settings (auto-create on, 1 partition per new topic), or for
    tests marked `cluster` also a three-broker cluster (see `broker_with`)."""
    return broker_with()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    brokers = item.stash.get(_BROKERS_KEY, [])
    if report.failed and brokers:
        for broker, since in brokers:
            report.sections.append(
                (f"millrace broker log ({broker.log_path})", broker.log_tail(since=since))
            )

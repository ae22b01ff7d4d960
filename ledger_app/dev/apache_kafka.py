"""Run a real Apache Kafka broker (KRaft) from Maven-fetched jars: for `ledger dev --kafka apache` and tests.

Tansu (ledger_app/dev/broker.py) needs nothing but the wheel, but it is not the broker users run: it
has no idempotent or transactional producer and answers waiting fetches late. Where `java` and
`mvn` exist, this module runs the real one without Docker or a tarball:

1. `mvn dependency:build-classpath` resolves `apache-kafka.pom.xml` (kafka_2.13 and its
   dependencies) into `~/.m2` once; the classpath is cached in a file under the user's cache
   folder, so later starts run no Maven at all. A file lock lets two processes (two xdist
   workers) resolve at the same time safely.
2. Each node gets a generated `server.properties` (combined broker+controller, static quorum,
   loopback listeners on free ports, test-friendly settings: no initial rebalance delay,
   replication 1 for internal topics on one node, small buffers), its storage is formatted with
   `kafka.tools.StorageTool`, then `kafka.Kafka` runs on a small heap.
3. A start is finished when the broker logs that it started (the log4j2 configuration written
   here keeps the log quiet except for that line, warnings and errors).

`KraftCluster` starts one node or several on loopback (the several-node form is for fault tests:
replication 3, `min.insync.replicas` 2); a node can be killed and started again on its own data.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ledger_app.dev.broker import free_port

POM = Path(__file__).with_name("apache-kafka.pom.xml")
STARTED_LINE = "Kafka Server started"
_STARTED_LOGGER = "kafka.server.KafkaRaftServer"


class ApacheKafkaUnavailable(RuntimeError):
    """Java or Maven is missing, or Maven could not resolve the broker's jars."""


class PortTaken(RuntimeError):
    """A node could not bind a port chosen as free (another process took it first)."""


def kafka_version() -> str:
    """The Apache Kafka version the pom pins (the one every start runs)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", POM.read_text())
    if match is None:
        raise ApacheKafkaUnavailable(f"{POM} names no kafka.version")
    return match.group(1)


def missing_tools() -> list[str]:
    """Which of `java` and `mvn` are not on PATH (empty: Apache Kafka can run here)."""
    return [tool for tool in ("java", "mvn") if shutil.which(tool) is None]


def cache_folder() -> Path:
    """Where the resolved classpath is cached (`$XDG_CACHE_HOME/order-ledger`, else ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "order-ledger"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached_classpath(path: Path) -> str | None:
    if not path.exists():
        return None
    classpath = path.read_text().strip()
    jars = classpath.split(os.pathsep)
    if not classpath or not all(Path(jar).is_file() for jar in jars):
        return None
    return classpath


def broker_classpath(cache: Path | None = None, *, timeout_s: float = 900.0) -> str:
    """The broker's Java classpath, resolved by Maven on first use and cached afterwards."""
    missing = missing_tools()
    if missing:
        raise ApacheKafkaUnavailable(
            f"Apache Kafka needs {' and '.join(missing)} on PATH (OpenJDK 17+ and Maven); "
            "install them or use the default Tansu broker"
        )
    folder = cache or cache_folder()
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    target = folder / f"apache-kafka-{kafka_version()}-{digest}.classpath"
    found = _cached_classpath(target)
    if found is not None:
        return found
    with _file_lock(folder / "apache-kafka.lock"):
        found = _cached_classpath(target)
        if found is not None:
            return found
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:build-classpath",
                f"-Dmdep.outputFile={partial}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0 or not partial.exists():
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise ApacheKafkaUnavailable(
                "Maven could not resolve the Apache Kafka broker:\n" + "\n".join(tail)
            )
        partial.replace(target)
    found = _cached_classpath(target)
    if found is None:
        raise ApacheKafkaUnavailable(f"Maven wrote an unusable classpath to {target}")
    return found


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in Kafka's URL-safe base64 form (never starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


_LOG4J2 = f"""\
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.started.name = {_STARTED_LOGGER}
logger.started.level = info
"""

# Settings that make a broker on a laptop or CI machine start fast and behave like production
# for a client: groups form at once, internal topics fit one node, buffers fit a small heap.
TEST_FRIENDLY: Mapping[str, str] = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "5",
    "transaction.state.log.num.partitions": "5",
    "share.coordinator.state.topic.num.partitions": "5",
    "num.network.threads": "2",
    "num.io.threads": "4",
    "background.threads": "4",
    "num.recovery.threads.per.data.dir": "1",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": "8388608",
    "log.index.size.max.bytes": "1048576",
    "log.segment.bytes": "67108864",
    "auto.create.topics.enable": "true",
    "num.partitions": "1",
    "controller.quorum.election.timeout.ms": "1000",
    "controller.quorum.fetch.timeout.ms": "2000",
}


@dataclass
class KraftNode:
    """One combined broker+controller process of a `KraftCluster`."""

    node_id: int
    port: int
    controller_port: int
    internal_port: int
    data_dir: Path
    advertised_port: int | None = None
    log_offset: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class KraftCluster:
    """A KRaft cluster of `size` nodes on loopback, each its own JVM; one node is a whole broker.

    `advertised_ports` lets a node advertise another port than it listens on (a TCP proxy in
    front of it). `heap_mb` is each JVM's heap; `fast_start` trades peak throughput for start-up
    time (the JIT stops at its first tier), right for tests, wrong for benchmarks.
    """

    size: int = 1
    host: str = "127.0.0.1"
    root: Path | None = None
    heap_mb: int = 320
    fast_start: bool = True
    advertised_ports: Mapping[int, int] = field(default_factory=dict)
    ports: Mapping[int, int] = field(default_factory=dict)
    overrides: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = 120.0
    nodes: list[KraftNode] = field(default_factory=list)
    cluster_id: str = field(default_factory=new_cluster_id)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _classpath: str = field(default="", repr=False)

    @property
    def version(self) -> str:
        return kafka_version()

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{n.advertised_port or n.port}" for n in self.nodes)

    def describe(self) -> str:
        shape = "one node" if self.size == 1 else f"{self.size} nodes"
        return f"Apache Kafka {self.version} (KRaft, {shape}, jars from Maven)"

    def node(self, node_id: int) -> KraftNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self) -> KraftCluster:
        self._classpath = broker_classpath()
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ledger-kafka-")
            self.root = Path(self._tmp.name)
        for attempt in range(3):
            self.nodes = [self._new_node(index + 1) for index in range(self.size)]
            try:
                for node in self.nodes:
                    self._prepare(node)
                for node in self.nodes:
                    self._launch(node)
                for node in self.nodes:
                    self._wait_started(node)
            except PortTaken:
                # A free port was taken by another process before the JVM bound it: in a
                # throwaway folder, start over on new ports (a kept folder keeps the error).
                self._stop_nodes(timeout_s=5)
                if self._tmp is None or attempt == 2:
                    self.stop()
                    raise
                for node in self.nodes:
                    shutil.rmtree(node.data_dir, ignore_errors=True)
                continue
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def _new_node(self, node_id: int) -> KraftNode:
        return KraftNode(
            node_id=node_id,
            port=self.ports.get(node_id) or free_port(self.host),
            controller_port=free_port(self.host),
            internal_port=free_port(self.host),
            data_dir=self.root_dir / f"node-{node_id}",
            advertised_port=self.advertised_ports.get(node_id),
        )

    @property
    def root_dir(self) -> Path:
        if self.root is None:
            raise RuntimeError("the cluster is not started")
        return self.root

    def _properties(self, node: KraftNode) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.nodes)
        replicas = str(min(self.size, 3))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            # Clients use PLAINTEXT (which may advertise a proxy's port); brokers talk to each
            # other on INTERNAL, so cutting a proxy cuts clients only, as a network fault would.
            "listeners": (
                f"PLAINTEXT://{self.host}:{node.port},INTERNAL://{self.host}:{node.internal_port},"
                f"CONTROLLER://{self.host}:{node.controller_port}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://{self.host}:{node.advertised_port or node.port},"
                f"INTERNAL://{self.host}:{node.internal_port}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir / "logs"),
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": str(min(self.size, 2)),
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": str(min(self.size, 2)),
            "default.replication.factor": replicas,
            **TEST_FRIENDLY,
            **self.overrides,
        }
        return props

    def _prepare(self, node: KraftNode) -> None:
        """Write the node's configuration and format its storage (once: a restart keeps its data)."""
        node.data_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{k}={v}\n" for k, v in self._properties(node).items())
        node.properties_path.write_text(text)
        (node.data_dir / "log4j2.properties").write_text(_LOG4J2)
        if (node.data_dir / "logs" / "meta.properties").exists():
            return
        result = subprocess.run(
            [
                *self._java(node, heap_mb=128, quick=True),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                self.cluster_id,
                "--config",
                str(node.properties_path),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def _java(self, node: KraftNode, *, heap_mb: int, quick: bool) -> list[str]:
        flags = [
            "java",
            f"-Xmx{heap_mb}m",
            "-Xms64m",
            "-XX:+UseSerialGC" if quick else "-XX:+UseG1GC",
            "-XX:-UsePerfData",
            "-Xshare:auto",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={node.data_dir}",
        ]
        if quick:
            flags.append("-XX:TieredStopAtLevel=1")
        return [*flags, "-cp", self._classpath]

    def _launch(self, node: KraftNode) -> None:
        node.log_offset = node.log_path.stat().st_size if node.log_path.exists() else 0
        with node.log_path.open("ab") as out:
            node.process = subprocess.Popen(
                [
                    *self._java(node, heap_mb=self.heap_mb, quick=self.fast_start),
                    "kafka.Kafka",
                    str(node.properties_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_started(self, node: KraftNode) -> None:
        """Until this run of the node logs that it started (earlier runs' lines do not count)."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            with node.log_path.open("rb") as log:
                log.seek(node.log_offset)
                text = log.read().decode(errors="replace")
            if STARTED_LINE in text:
                return
            if node.process is None or node.process.poll() is not None:
                tail = "\n".join(text.splitlines()[-20:])
                if "Address already in use" in text:
                    raise PortTaken(f"Kafka node {node.node_id}: a port was taken:\n{tail}")
                raise RuntimeError(f"Kafka node {node.node_id} exited while starting:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Kafka node {node.node_id} did not start in {self.start_timeout_s}s; see {node.log_path}"
                )
            time.sleep(0.1)

    def restart(self, node_id: int) -> None:
        """Start a stopped or killed node again on its own data and ports; returns once it started."""
        node = self.node(node_id)
        if node.alive():
            raise RuntimeError(f"node {node_id} is running")
        self._launch(node)
        self._wait_started(node)

    def kill(self, node_id: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to one node (SIGKILL: a crash; SIGTERM: a clean stop) and wait for it to exit."""
        node = self.node(node_id)
        if node.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            node.process.send_signal(sig)
        node.process.wait(timeout=60)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every node (SIGTERM: a clean shutdown; SIGKILL after `timeout_s`) and drop temp data."""
        self._stop_nodes(timeout_s)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _stop_nodes(self, timeout_s: float) -> None:
        for node in self.nodes:
            if node.alive() and node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=10)
            node.process = None

    def __enter__(self) -> KraftCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""`ledger dev`: the whole system in one process tree, on embedded defaults.

Without `LEDGER_DATABASE_URL` an embedded PostgreSQL keeps its data under `.ledger/pgdata` (a
second start reuses it); without `LEDGER_KAFKA_BOOTSTRAP_SERVERS` a Tansu broker runs in memory
(or, with `--kafka apache`, a Maven-fetched Apache Kafka keeps its data under `.ledger/kafka`);
without destination URLs the two sandboxes stand in for Omneo and Omnisend. Every ledger process
is a child started with the same CLI a production deployment uses, so the dev stack exercises the
real wiring. Children run in their own process groups and are stopped (TERM, then KILL) on
Ctrl-C or SIGTERM, so nothing is left behind; killed hard (SIGKILL, OOM), `ledger dev` still
leaves nothing: children get SIGTERM from the kernel and a watchdog stops the rest, PostgreSQL
included (`lifeline`). One `ledger dev` per folder (`lock`).

The broker is supervised like the other children. An in-memory broker (Tansu) that died comes
back empty: the relay and the Kafka consumers are stopped first (so nothing is produced into the
empty broker ahead of the re-published log), the broker is restarted on the same port, the
whole log is re-published (`ledger relay republish --from-position 0`, which creates the topic
with the configured partitions and releases the relay's hold), and they are started again.
Consumers dedupe by event id, so the re-published events cause no second effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ledger.privacy.cipher import Keyring
from ledger_app.dev.broker import TansuBroker, free_port, wait_for_port
from ledger_app.dev.lifeline import Watchdog, die_with_parent
from ledger_app.dev.lock import AlreadyRunning, DevLock

#: Children that talk to the broker: stopped while a lost broker is brought back.
KAFKA_CHILDREN = ("relay", "intake", "fanout-omneo", "fanout-omnisend")


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    watchdog: Watchdog | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - ledger dev starts children from one thread
        )
        out.close()
        if self.watchdog is not None:
            self.watchdog.watch_group(self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        if self.watchdog is not None:
            self.watchdog.forget_group(self.process.pid)


@dataclass
class DevStack:
    """Services, children and the facts written to `.ledger/dev.env`."""

    home: Path
    api_port: int = 8000
    kafka: str = "tansu"
    children: list[Child] = field(default_factory=list)
    env_file: dict[str, str] = field(default_factory=dict)
    watchdog: Watchdog | None = None
    broker: TansuBroker | None = None
    base_env: dict[str, str] = field(default_factory=dict)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def ledger_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ledger_app.cli", *args]

    def start_database(self) -> str:
        url = os.environ.get("LEDGER_DATABASE_URL")
        if url:
            return url
        from ledger_app.dev.embedded import start_embedded_postgres, stop_embedded_postgres

        data_dir = self.home / "pgdata"
        if self.watchdog is not None:  # before it starts: a kill right after must still stop it
            self.watchdog.watch_pgdata(data_dir)
        admin_dsn = start_embedded_postgres(data_dir)
        self._cleanups.append(lambda: stop_embedded_postgres(data_dir))
        return asyncio.run(_ensure_database(admin_dsn, "ledger"))

    def start_broker(self) -> str:
        named = os.environ.get("LEDGER_KAFKA_BOOTSTRAP_SERVERS")
        if named:
            return named
        if self.kafka == "apache":
            from ledger_app.dev.apache_kafka import KraftCluster

            # Data kept under .ledger/kafka like PostgreSQL's; full JIT and a larger heap for a long run.
            cluster = KraftCluster(root=self.home / "kafka", heap_mb=512, fast_start=False).start()
            self._cleanups.append(cluster.stop)
            return cluster.bootstrap_servers
        broker = TansuBroker(log_path=self.home / "logs" / "tansu.log").start()
        self._watch_broker(broker)
        self.broker = broker
        self._cleanups.append(lambda: self.broker.stop() if self.broker is not None else None)
        return broker.bootstrap_servers

    def _watch_broker(self, broker: TansuBroker) -> None:
        if self.watchdog is not None and broker.process is not None:
            self.watchdog.watch_group(broker.process.pid)

    def broker_died(self) -> bool:
        """True when the broker this stack started has exited."""
        return (
            self.broker is not None
            and self.broker.process is not None
            and self.broker.process.poll() is not None
        )

    def recover_broker(self, echo: Callable[[str], None]) -> None:
        """Bring a dead broker back with the whole log on it (see the module docstring)."""
        assert self.broker is not None
        code = self.broker.process.returncode if self.broker.process is not None else "?"
        echo(f"the Kafka broker exited with {code}; restarting it and re-publishing the log")
        stopped = [c for c in self.children if c.name in KAFKA_CHILDREN]
        for child in stopped:
            child.stop()
        self.broker.stop()
        self.broker.start()  # same port: every child's bootstrap setting stays right
        self._watch_broker(self.broker)
        result = subprocess.run(
            self.ledger_argv("relay", "republish", "--from-position", "0"),
            env=self.base_env,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=die_with_parent(),
        )
        echo(
            (result.stdout or result.stderr).strip().splitlines()[-1]
            if (result.stdout or result.stderr)
            else ""
        )
        for child in stopped:
            child.start()
        echo("the Kafka broker is back with the log re-published; relay, intake and fan-out restarted")

    def spawn(self, name: str, args: list[str], env: dict[str, str], port: int | None = None) -> Child:
        child = Child(
            name, self.ledger_argv(*args), env, self.home / "logs" / f"{name}.log", watchdog=self.watchdog
        )
        child.start()
        self.children.append(child)
        if port is not None:
            try:
                wait_for_port("127.0.0.1", port, timeout_s=60)
            except TimeoutError:
                raise RuntimeError(f"{name} did not start; see {child.log}") from None
        return child

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        while self._cleanups:
            with contextlib.suppress(Exception):
                self._cleanups.pop()()


async def _ensure_database(admin_dsn: str, name: str) -> str:
    """Create database `name` once (a second start reuses it) and return its DSN."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.replace("/postgres?", f"/{name}?", 1)


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _write_env(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into KeyboardInterrupt: one clean shutdown path for Ctrl-C and `kill`.

    SIGINT is set explicitly because a shell starts background jobs with SIGINT ignored, and
    Python then never raises KeyboardInterrupt for it.
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_dev(home: Path, api_port: int, echo: Callable[[str], None], kafka: str = "tansu") -> int:
    """Start everything, print where it is, supervise until interrupted; returns an exit code.

    `kafka` is "tansu" (default: needs nothing but the wheel) or "apache" (the Maven-fetched
    Apache Kafka of ledger/dev/apache_kafka.py; needs java and mvn).
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    try:
        lock = DevLock(home).acquire()
    except AlreadyRunning as exc:
        echo(str(exc))
        return 1
    watchdog = Watchdog(keep_open=(lock.fd,)).start()
    stack = DevStack(home=home, api_port=api_port, kafka=kafka, watchdog=watchdog)
    with _signals_raise():
        try:
            return _run(stack, echo)
        except KeyboardInterrupt:
            echo("stopping ...")
            return 0
        finally:
            stack.stop()
            watchdog.disarm()
            lock.release()
            echo("stopped; no process left behind")


def _dev_kek(home: Path) -> Path:
    """The dev stack's key-encryption key (docs/privacy.md#keys), made once under `.ledger/`.

    Fine for a laptop; in production the key lives apart from the database and its backups
    (a secret manager, a KMS), or a backup taken before an erasure would still open the data.
    """
    path = home / "kek"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(Keyring.generate_base64() + "\n")
    return path


def _run(stack: DevStack, echo: Callable[[str], None]) -> int:
    echo("starting PostgreSQL ...")
    dsn = stack.start_database()
    echo(
        "starting the Kafka broker (Apache Kafka) ..."
        if stack.kafka == "apache"
        else "starting the Kafka broker ..."
    )
    bootstrap = stack.start_broker()
    base_env = {
        **os.environ,
        "LEDGER_DATABASE_URL": dsn,
        "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PYTHONUNBUFFERED": "1",
    }
    urls: dict[str, str] = {}
    for dest in ("omneo", "omnisend"):
        key = f"LEDGER_{dest.upper()}__BASE_URL"
        if os.environ.get(key):
            continue
        port = free_port()
        token = f"sandbox-{dest}-token"
        stack.spawn(
            f"sandbox-{dest}", ["sandbox", dest, "--port", str(port), "--token", token], base_env, port
        )
        urls[dest] = f"http://127.0.0.1:{port}"
        base_env[key] = urls[dest]
        base_env[f"LEDGER_{dest.upper()}__TOKEN"] = token
    # Online orders ship from no store: their Omneo Transactions need a location all the same.
    base_env.setdefault("LEDGER_OMNEO__DEFAULT_LOCATION_ID", "online")
    if not (os.environ.get("LEDGER_PRIVACY__KEK") or os.environ.get("LEDGER_PRIVACY__KEK_FILE")):
        base_env["LEDGER_PRIVACY__KEK_FILE"] = str(_dev_kek(stack.home))

    echo("applying migrations ...")
    stack.base_env = base_env
    subprocess.run(
        stack.ledger_argv("migrate"),
        env=base_env,
        check=True,
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
    )
    token = subprocess.run(
        stack.ledger_argv("tokens", "create", "--name", "dev", "--scope", "admin"),
        env=base_env,
        check=True,
        capture_output=True,
        text=True,
        preexec_fn=die_with_parent(),
    ).stdout.strip()

    api_port = stack.api_port if stack.api_port and _port_free(stack.api_port) else free_port()
    stack.spawn("api", ["api", "--host", "127.0.0.1", "--port", str(api_port)], base_env, api_port)
    stack.spawn("intake", ["intake"], base_env)
    stack.spawn("relay", ["relay"], base_env)
    stack.spawn("projections", ["projections", "run", "--build-missing"], base_env)
    stack.spawn("fanout-omneo", ["fanout", "run", "omneo"], base_env)
    stack.spawn("fanout-omnisend", ["fanout", "run", "omnisend"], base_env)

    api_url = f"http://127.0.0.1:{api_port}"
    stack.env_file = {
        "LEDGER_API_URL": api_url,
        "LEDGER_CONSOLE_URL": f"{api_url}/console",
        "LEDGER_TOKEN": token,
        "LEDGER_DATABASE_URL": dsn,
        "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LEDGER_OMNEO_SANDBOX_URL": urls.get("omneo", base_env.get("LEDGER_OMNEO__BASE_URL", "")),
        "LEDGER_OMNISEND_SANDBOX_URL": urls.get("omnisend", base_env.get("LEDGER_OMNISEND__BASE_URL", "")),
    }
    if "LEDGER_PRIVACY__KEK_FILE" in base_env:
        stack.env_file["LEDGER_PRIVACY__KEK_FILE"] = base_env["LEDGER_PRIVACY__KEK_FILE"]
    _write_env(stack.home / "dev.env", stack.env_file)
    echo("")
    echo(f"  API          {api_url}   (OpenAPI: {api_url}/docs)")
    echo(f"  console      {api_url}/console   (web console: sign in with the token below)")
    echo(f"  token        {token}")
    echo(f"  PostgreSQL   {dsn}")
    echo(f"  Kafka        {bootstrap}")
    for dest, url in urls.items():
        echo(f"  {dest:<12} {url}   (what it received: {url}/_sandbox/requests)")
    echo(f"  logs         {stack.home / 'logs'}/")
    echo(f"  env          {stack.home / 'dev.env'}  (source it; then try `ledger demo`)")
    echo("ready. Ctrl-C stops everything.")
    return _supervise(stack, echo)


def _supervise(stack: DevStack, echo: Callable[[str], None]) -> int:
    """Restart a child that dies (with a pause), like a process manager would."""
    restarts: dict[str, float] = {}
    while True:
        time.sleep(0.5)
        if stack.broker_died():
            stack.recover_broker(echo)
        for child in stack.children:
            if child.alive():
                continue
            last = restarts.get(child.name, 0.0)
            if time.monotonic() - last < 2.0:
                continue
            echo(f"{child.name} exited with {child.process.returncode if child.process else '?'}; restarting")
            restarts[child.name] = time.monotonic()
            child.start()

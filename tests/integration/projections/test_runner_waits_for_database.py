"""Projections wait for a PostgreSQL that is not up yet, or restarting, instead of exiting.

The server in front of the test database plays a PostgreSQL start: first nothing listens
(connection refused), then it answers every login with FATAL 57P03 "the database system is
starting up" (asyncpg's `CannotConnectNowError`), then it is up (it forwards to the real
server). Later it restarts the same way under a running runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import pytest
import structlog

from ledger.store import EventStore
from ledger_app.dev.broker import free_port
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import StoreSettings
from projections import order_state
from projections.connect import open_pool
from projections.runner import Runner
from projections.simulate import HistoryGenerator
from tests.integration.projections.support import append_interleaved, assert_matches_fold, wait_caught_up

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104


def _error_response(code: str, message: str) -> bytes:
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class StartingPostgres:
    """127.0.0.1:port in front of the real server: down, starting (57P03) or up (forwarding)."""

    def __init__(self, target_dsn: str) -> None:
        self.port = free_port()
        self.target = urlsplit(target_dsn)
        self.state = "down"
        self.refused_logins = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def dsn(self) -> str:
        """The target DSN with this front's address (and no SSL negotiation to fake)."""
        path = self.target.path
        return urlunsplit(
            (
                "postgresql",
                f"{self.target.username or 'postgres'}@127.0.0.1:{self.port}",
                path,
                "sslmode=disable",
                "",
            )
        )

    async def start(self, state: str) -> None:
        """Listen (again) in `state` ("starting" or "up")."""
        self.state = state
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def restart(self) -> None:
        """Drop every connection and answer 57P03 until `start("up")`."""
        self.state = "starting"
        for writer in list(self._conns):
            writer.transport.abort()
        self._conns.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._conns):
            writer.transport.abort()

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        query = parse_qs(self.target.query)
        host = query.get("host", [self.target.hostname or "127.0.0.1"])[0]
        port = int(query.get("port", [self.target.port or 5432])[0])
        if host.startswith("/"):
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            if self.state != "up":
                await self._refuse_login(reader, writer)
                return
            up_reader, up_writer = await self._open_target()
            self._conns.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def _refuse_login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            packet = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!I", packet[:4])
            if code in (_SSL_REQUEST, _GSS_REQUEST):
                writer.write(b"N")
                continue
            break
        self.refused_logins += 1
        writer.write(_error_response("57P03", "the database system is starting up"))
        await writer.drain()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()


@contextlib.asynccontextmanager
async def starting_postgres(dsn: str) -> AsyncIterator[StartingPostgres]:
    front = StartingPostgres(dsn)
    try:
        yield front
    finally:
        await front.close()


async def _until(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for a state the runner reaches (checked every 20 ms)."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def _retries(logs: list[MutableMapping[str, Any]], error: str) -> int:
    return sum(
        1 for e in logs if e.get("event") == "stamina.retry_scheduled" and error in str(e.get("caused_by"))
    )


def _runner_met(logs: list[MutableMapping[str, Any]], error: str) -> bool:
    return any(e.get("event") == "projection connection lost" and error in str(e.get("error")) for e in logs)


async def test_the_runner_waits_for_a_starting_postgres_and_catches_up_once_it_is_up(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    generator = HistoryGenerator(seed=11)
    await append_interleaved(store, generator.histories(20), seed=11)
    p = order_state.PROJECTION
    stop = asyncio.Event()
    runner: Runner | None = None

    async with starting_postgres(database_url) as front:

        async def serve() -> None:
            nonlocal runner
            projections_pool = await open_pool(
                front.dsn(),
                StoreSettings(pool_min_size=1, pool_max_size=4),
                application_name="ledger-projections-run",
                wait_initial_s=0.05,
                wait_max_s=0.2,
            )
            try:
                runner = Runner(projections_pool, p, poll_interval_s=0.02, metrics=Metrics())
                waiter = asyncio.ensure_future(stop.wait())
                running = asyncio.ensure_future(runner.run())
                await asyncio.wait((waiter, running), return_when=asyncio.FIRST_COMPLETED)
                runner.stop()
                waiter.cancel()
                await running
            finally:
                await projections_pool.close()

        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(serve())
            # Not listening yet: connection refused, retried with one log line per attempt.
            await _until(lambda: _retries(logs, "ConnectionRefusedError") >= 2)
            await front.start("starting")
            await _until(lambda: front.refused_logins >= 2 and _retries(logs, "CannotConnectNowError") >= 1)
            assert not task.done()
            await front.start("up")
            await wait_caught_up(pool, p, timeout=60)

            # A restart under the running runner: connections drop, logins get 57P03 for a while.
            await front.restart()
            await append_interleaved(store, generator.histories(10), seed=12)
            await _until(lambda: _runner_met(logs, "CannotConnectNowError") or task.done())
            assert not task.done()
            await front.start("up")
            await wait_caught_up(pool, p, timeout=60)
            stop.set()
            await asyncio.wait_for(task, 30)
    assert runner is not None
    assert await pool.fetchval("SELECT count(*) FROM order_state") == 30
    await assert_matches_fold(pool, p)

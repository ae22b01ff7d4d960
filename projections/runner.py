"""The live runner: one active writer per projection version, exactly-once effect per event.

Each batch is one transaction on the connection that holds the version's session advisory
lock: read the fenced log after the checkpoint, fold the touched orders, replace their rows,
save the checkpoint. A crash anywhere rolls the whole batch back, so after a restart the
batch is applied again from the old checkpoint and no event's effect is ever counted twice.

A second instance of the same version waits as a standby (`pg_try_advisory_lock` polling,
never a blocking lock that `statement_timeout` would cut): when the active process dies its
connection closes, PostgreSQL drops the lock and the standby takes over from the committed
checkpoint. Because all writes go through the lock-holding connection, a runner that lost its
connection cannot write anything either: there is no window with two writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import asyncpg

from ledger.store import reads
from ledger.store.records import START, Checkpoint
from ledger.store.store import load_checkpoint, save_checkpoint
from ledger_kernel.observability.logs import get_logger
from ledger_kernel.observability.metrics import METRICS, Metrics
from projections import registry, tables
from projections.db import connection
from projections.definition import Projection
from projections.fold import POS, TX, OrderFolder

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BatchResult:
    events: int
    orders: int
    checkpoint: Checkpoint


async def apply_batch(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    folder: OrderFolder,
    checkpoint: Checkpoint,
    *,
    limit: int,
) -> BatchResult:
    """Apply up to `limit` events after `checkpoint` to `version`'s tables, in one transaction."""
    async with conn.transaction():
        rows = await reads.read_all_raw(conn, checkpoint, limit)
        if not rows:
            return BatchResult(0, 0, checkpoint)
        states = await folder.apply(conn, rows)
        await tables.replace_orders(conn, projection, version, states.values())
        last = rows[-1]
        checkpoint = Checkpoint(last[TX], last[POS])
        await save_checkpoint(conn, projection.checkpoint_name(version), checkpoint)
    folder.commit(states)
    return BatchResult(len(rows), len(states), checkpoint)


async def catch_up(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    folder: OrderFolder,
    checkpoint: Checkpoint,
    *,
    batch_size: int,
    until_lag: int = 0,
) -> tuple[Checkpoint, int]:
    """Apply batches until a batch comes back shorter than `batch_size - until_lag` (near the head)."""
    applied = 0
    while True:
        result = await apply_batch(conn, projection, version, folder, checkpoint, limit=batch_size)
        checkpoint = result.checkpoint
        applied += result.events
        if result.events < max(1, batch_size - until_lag):
            return checkpoint, applied


class Runner:
    """Runs one projection version until `stop()`; standby while another instance is active."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        projection: Projection,
        *,
        batch_size: int = 1000,
        poll_interval_s: float = 0.2,
        cache_size: int = 200_000,
        metrics: Metrics = METRICS,
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.cache_size = cache_size
        self.metrics = metrics
        self.state = "starting"
        self.checkpoint: Checkpoint | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def run(self) -> None:
        """Install (or refuse: `registry.CodeChanged`, `registry.NotBuilt`), then serve until stopped."""
        p = self.projection
        async with connection(self.pool) as conn:
            await registry.install(conn, p)
        while not self._stop.is_set():
            try:
                await self._serve()
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                self.state = "reconnecting"
                _log.warning("projection connection lost", projection=p.name, error=str(exc))
                await self._sleep(1.0)

    async def _serve(self) -> None:
        p = self.projection
        key = p.lock_key()
        async with connection(self.pool) as conn:
            await conn.execute(f"SET application_name = '{registry.application_name(p, 'standby')}'")
            self.state = "standby"
            while not await self._take_lock(conn, key):
                if self._stop.is_set():
                    return
                await self._sleep(self.poll_interval_s)
            try:
                await conn.execute(f"SET application_name = '{registry.application_name(p, 'active')}'")
                self.state = "running"
                _log.info("projection runner active", projection=p.name, version=p.version)
                await self._loop(conn)
            finally:
                if not conn.is_closed():
                    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                        await conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def _take_lock(self, conn: asyncpg.Connection, key: int) -> bool:
        """The version's lock, if it is free and the version is servable.

        A version that is `building` (its rebuild died, leaving bare tables) or `failed`
        (verification refused it) is not served: taking its lock would also make the operator's
        next `rebuild` fail as "held by another runner". Stay standby until it is built.

        The status is read before the lock is tried: a standby that took the lock just to look
        would make a rebuild started in that instant fail the same way.
        """
        if not await self._servable(conn):
            return False
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            return False
        if await self._servable(conn):  # a rebuild may have begun (and died) in between
            return True
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
        return False

    async def _servable(self, conn: asyncpg.Connection) -> bool:
        row = await registry.version_row(conn, self.projection.name, self.projection.version)
        return row is None or row["status"] not in ("building", "failed")

    async def _loop(self, conn: asyncpg.Connection) -> None:
        p = self.projection
        # A cluster whose xids are behind the stored ones (a logical restore) would hide new
        # events from the fence for good: refuse, with what to do, rather than lag silently.
        await reads.check_xid_horizon(conn)
        # Checkpoint and cache are only trusted while we hold the lock: reload both on takeover.
        folder = OrderFolder(self.cache_size)
        checkpoint = await load_checkpoint(conn, p.checkpoint_name()) or START
        applied = self.metrics.projection_applied.labels(p.name)
        lag = self.metrics.projection_lag_events.labels(p.name)
        last_lag = 0.0
        while not self._stop.is_set():
            result = await apply_batch(conn, p, p.version, folder, checkpoint, limit=self.batch_size)
            checkpoint = self.checkpoint = result.checkpoint
            applied.inc(result.events)
            now = time.monotonic()
            if result.events < self.batch_size or now - last_lag > 1.0:
                lag.set(await reads.events_after(conn, checkpoint))
                last_lag = now
            if result.events < self.batch_size:
                await self._sleep(self.poll_interval_s)


async def run_projections(
    pool: asyncpg.Pool,
    projections: list[Projection],
    *,
    batch_size: int = 1000,
    poll_interval_s: float = 0.2,
    stop: asyncio.Event | None = None,
) -> None:
    """Run several projections in one process until `stop` is set (graceful: locks released)."""
    runners = [Runner(pool, p, batch_size=batch_size, poll_interval_s=poll_interval_s) for p in projections]

    async def stopper() -> None:
        if stop is not None:
            await stop.wait()
            for runner in runners:
                runner.stop()

    watcher = asyncio.create_task(stopper())
    try:
        await asyncio.gather(*(r.run() for r in runners))
    finally:
        watcher.cancel()
        for runner in runners:
            runner.stop()

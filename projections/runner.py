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
from collections.abc import Sequence
from dataclasses import dataclass, replace

import asyncpg

from ledger.domain.state import Order
from ledger.repository import apply
from ledger.store import reads
from ledger.store.records import START, Checkpoint
from ledger.store.store import load_checkpoint, save_checkpoint
from ledger_kernel.observability.logs import get_logger
from ledger_kernel.observability.metrics import METRICS, Metrics
from projections import quarantine, registry, tables
from projections.connect import UNREACHABLE
from projections.db import connection
from projections.definition import Projection
from projections.fold import POS, STREAM, TX, OrderFolder
from projections.quarantine import Failure, describe

_log = get_logger(__name__)

#: Errors after which the runner reconnects (and waits while the server is unreachable).
_LOST: tuple[type[Exception], ...] = (*UNREACHABLE, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class BatchResult:
    events: int
    orders: int
    checkpoint: Checkpoint
    #: Orders this batch quarantined (see `projections.quarantine`).
    quarantined: tuple[Failure, ...] = ()


def _connection_error(exc: BaseException) -> bool:
    """A lost connection or a cancelled statement: the batch is retried, no order is to blame."""
    if isinstance(exc, ValueError):  # asyncpg's client-side DataError is an InterfaceError too
        return False
    return isinstance(exc, (*_LOST, asyncpg.QueryCanceledError))


async def apply_batch(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    folder: OrderFolder,
    checkpoint: Checkpoint,
    *,
    limit: int,
    quarantined: set[str] | None = None,
) -> BatchResult:
    """Apply up to `limit` events after `checkpoint` to `version`'s tables, in one transaction.

    Orders in `quarantined` are skipped; an order whose events cannot be folded or whose rows
    cannot be written joins it (recorded in `projection_quarantine` in the same transaction)
    instead of failing the batch. The write of a batch is one COPY per table; when it fails,
    the batch is applied again with a savepoint per order to find the orders to blame (the
    happy path pays nothing for this).
    """
    held = quarantined if quarantined is not None else set()
    isolate = False
    while True:
        try:
            async with conn.transaction():
                rows = await reads.read_all_raw(conn, checkpoint, limit)
                if not rows:
                    return BatchResult(0, 0, checkpoint)
                states, failures = await folder.apply(conn, rows, held)
                if isolate:
                    refused = await tables.replace_each(conn, projection, version, states)
                    last_position = {row[STREAM]: row[POS] for row in rows}
                    for failure in refused:
                        del states[failure.stream_id]
                        failures.append(replace(failure, position=last_position.get(failure.stream_id)))
                else:
                    await tables.replace_orders(conn, projection, version, states.values())
                await quarantine.record(conn, projection.name, version, failures)
                last = rows[-1]
                checkpoint = Checkpoint(last[TX], last[POS])
                await save_checkpoint(conn, projection.checkpoint_name(version), checkpoint)
            break
        except Exception as exc:
            if isolate or _connection_error(exc):
                raise
            isolate = True
    folder.commit(states)
    for failure in failures:
        held.add(failure.stream_id)
        folder.states.pop(failure.stream_id, None)
    return BatchResult(len(rows), len(states), checkpoint, tuple(failures))


async def refold(
    conn: asyncpg.Connection, projection: Projection, version: int, streams: Sequence[str]
) -> tuple[list[str], list[Failure]]:
    """Fold quarantined orders again from their whole streams and write their rows.

    Returns the orders now applied (released from quarantine) and those that still fail (their
    error refreshed). Events beyond the checkpoint may be folded in: harmless, because rows are
    replaced per order and the batch that reaches those events folds the order from the store
    again (the folded states are not cached).
    """
    async with conn.transaction():
        rows = await conn.fetch(_STREAMS_SQL, list(streams))
        states: dict[str, Order] = {}
        failures: dict[str, Failure] = {}
        for row in rows:
            stream = row[0]
            if stream in failures:
                continue
            try:
                states[stream] = apply(states.get(stream), row[2], row[3], row[4], row[1], row[5])
            except Exception as exc:  # still not foldable: stays quarantined
                states.pop(stream, None)
                failures[stream] = Failure(stream, row[1], row[6], describe(exc))
        for failure in await tables.replace_each(conn, projection, version, states):
            del states[failure.stream_id]
            failures[failure.stream_id] = failure
        await quarantine.record(conn, projection.name, version, failures.values())
        applied = [s for s in streams if s not in failures]
        await quarantine.release(conn, projection.name, version, applied)
    return applied, list(failures.values())


_STREAMS_SQL = """
SELECT stream_id, version, type, schema_version, data::text, recorded_at, position
  FROM events WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, version
"""


async def catch_up(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    folder: OrderFolder,
    checkpoint: Checkpoint,
    *,
    batch_size: int,
    until_lag: int = 0,
    quarantined: set[str] | None = None,
) -> tuple[Checkpoint, int]:
    """Apply batches until a batch comes back shorter than `batch_size - until_lag` (near the head)."""
    applied = 0
    while True:
        result = await apply_batch(
            conn, projection, version, folder, checkpoint, limit=batch_size, quarantined=quarantined
        )
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
        #: Quarantined orders of this version (loaded on takeover; see `projections.quarantine`).
        self.quarantined: set[str] = set()
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def run(self) -> None:
        """Install (or refuse: `registry.CodeChanged`, `registry.NotBuilt`), then serve until stopped."""
        p = self.projection
        installed = False
        while not self._stop.is_set():
            try:
                if not installed:
                    async with connection(self.pool) as conn:
                        await registry.install(conn, p)
                    installed = True
                await self._serve()
            except _LOST as exc:
                # A server restarting answers CannotConnectNowError until it is up: wait for it.
                self.state = "reconnecting"
                _log.warning("projection connection lost", projection=p.name, error=repr(exc))
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
        held = self.metrics.projection_quarantined_orders.labels(p.name)
        # A takeover is usually a deploy: fold the quarantined orders again, a fix may be in it.
        self.quarantined = await quarantine.streams(conn, p.name, p.version)
        if self.quarantined:
            await self._refold(conn, sorted(self.quarantined))
        held.set(len(self.quarantined))
        last_lag = 0.0
        while not self._stop.is_set():
            result = await apply_batch(
                conn, p, p.version, folder, checkpoint, limit=self.batch_size, quarantined=self.quarantined
            )
            checkpoint = self.checkpoint = result.checkpoint
            applied.inc(result.events)
            for failure in result.quarantined:
                _log.error(
                    "projection quarantined an order it cannot apply",
                    projection=p.name,
                    version=p.version,
                    stream_id=failure.stream_id,
                    event_version=failure.event_version,
                    position=failure.position,
                    error=failure.error,
                )
            if result.quarantined:
                held.set(len(self.quarantined))
            now = time.monotonic()
            if result.events < self.batch_size or now - last_lag > 1.0:
                lag.set(await reads.events_after(conn, checkpoint))
                last_lag = now
            if result.events < self.batch_size:
                if self.quarantined and (
                    requested := await quarantine.retry_requested(conn, p.name, p.version)
                ):
                    await self._refold(conn, requested)
                    held.set(len(self.quarantined))
                await self._sleep(self.poll_interval_s)

    async def _refold(self, conn: asyncpg.Connection, streams: list[str]) -> None:
        p = self.projection
        released, failures = await refold(conn, p, p.version, streams)
        self.quarantined.difference_update(released)
        for stream in released:
            _log.info("projection folded a quarantined order again", projection=p.name, stream_id=stream)
        for failure in failures:
            _log.error(
                "projection still cannot apply a quarantined order",
                projection=p.name,
                version=p.version,
                stream_id=failure.stream_id,
                event_version=failure.event_version,
                error=failure.error,
            )


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

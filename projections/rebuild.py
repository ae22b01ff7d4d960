"""Blue/green rebuild: build a new version beside the live one, verify it, swap, keep the old.

Phases (EVENTSTORES §3):
1. bulk: read the whole fenced log in large pages (server-side cursor), fold every order in
   memory, COPY the rows into bare tables, then add keys and indexes (the builds spread over
   one connection per worker) and ANALYZE;
2. catch-up: the live runner's own batch code, on this version, until near the head (the
   fold cache carries over from the bulk phase, so no order is refolded);
3. verify at that checkpoint (`verify.py`): the tables read back against the checksums the bulk
   fold recorded beside its rows (`checksums.py`), after checking that it folded exactly the
   log's events, with the orders the catch-up touched folded again from scratch; or, with
   `refold`, against a second, independent fold of the whole log (as costly as the build). Any
   difference marks the version `failed`, keeps its tables for inspection and refuses the swap;
4. catch up again and swap the views in one transaction; the old version becomes `previous`
   (for `rollback`) and its runner, if still deployed, keeps it fresh.

With `workers > 1` the same worker processes (`bulk.WorkerPool`, started first so their start
overlaps the setup) run the bulk parts and then the verification parts.

The rebuild holds the version's runner lock throughout, so a runner of the new code started
early waits as standby and takes over right after the swap. Live traffic keeps writing and
reading the old version the whole time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg

from ledger.store import reads
from ledger.store.store import save_checkpoint
from projections import bulk, checksums, partition, quarantine, registry, tables
from projections.db import connection
from projections.definition import Projection
from projections.fold import OrderFolder
from projections.runner import catch_up
from projections.verify import VerifyReport, verify

BeforeVerify = Callable[[asyncpg.Connection, Projection, int], Awaitable[None]]


class ProgressSink(Protocol):
    """Where a rebuild reports progress (the CLI draws a rich progress bar from it)."""

    def phase(self, name: str, total: int | None = None) -> None: ...

    def advance(self, events: int, total: int | None = None) -> None: ...


class _NoProgress:
    def phase(self, name: str, total: int | None = None) -> None:
        return None

    def advance(self, events: int, total: int | None = None) -> None:
        return None


class VerificationFailed(registry.RebuildRefused):
    """The built version does not match the fold of the log; the swap was refused."""

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        shown = ", ".join(f"{d.table}:{d.order_id}:{d.kind}" for d in report.differences[:5])
        super().__init__(
            f"projection {report.projection!r} v{report.version} failed verification at "
            f"{tuple(report.checkpoint)}: {report.difference_count} difference(s) "
            f"(rows expected {report.expected_rows}, found {report.actual_rows}; e.g. {shown}). "
            "Swap refused; the live version keeps serving."
        )


@dataclass
class RebuildReport:
    projection: str
    version: int
    previous: int | None = None
    bulk_events: int = 0
    catchup_events: int = 0
    orders: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    verification: VerifyReport | None = None
    swapped: bool = False
    #: Largest peak RSS of a worker process (MiB); None when the build ran in this process.
    worker_peak_rss_mib: int | None = None
    #: Orders the build could not fold or write (`projections.quarantine`): the version serves
    #: them as stale; `ledger projections quarantine NAME` shows why.
    quarantined: list[str] = field(default_factory=list)

    @property
    def build_rate(self) -> float:
        """Events per second of the build (bulk read, fold and COPY, indexes), verification excluded."""
        build = sum(self.seconds.get(k, 0.0) for k in ("bulk", "index"))
        return self.bulk_events / build if build else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "projection": self.projection,
            "version": self.version,
            "previous": self.previous,
            "bulk_events": self.bulk_events,
            "catchup_events": self.catchup_events,
            "orders": self.orders,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "build_rate": round(self.build_rate),
            "verification": None if self.verification is None else self.verification.as_json(),
            "swapped": self.swapped,
            "worker_peak_rss_mib": self.worker_peak_rss_mib,
            "quarantined": self.quarantined[:100],
            "quarantined_count": len(self.quarantined),
        }


@dataclass(frozen=True, slots=True)
class _Options:
    dsn: str | None
    workers: int
    page_size: int
    batch_size: int
    copy_chunk: int
    before_verify: BeforeVerify | None
    swap: bool
    refold: bool
    max_quarantined: int


async def rebuild(
    pool: asyncpg.Pool,
    projection: Projection,
    *,
    dsn: str | None = None,
    workers: int = 1,
    page_size: int = 20_000,
    batch_size: int = 1000,
    copy_chunk: int = 5000,
    progress: ProgressSink | None = None,
    before_verify: BeforeVerify | None = None,
    swap: bool = True,
    refold: bool = False,
    max_quarantined: int = 10,
) -> RebuildReport:
    """Build, verify and (if `swap`) swap in this deploy's version; see the module docstring.

    `workers > 1` folds parts of the log in that many processes, which connect with `dsn`.
    `refold` verifies against a second fold of the whole log instead of the recorded checksums.
    An order the build cannot fold or write is quarantined and reported (`report.quarantined`),
    up to `max_quarantined` per part of the log: more is a bug, raised as itself.
    Raises `registry.RebuildRefused` (live version, lock held elsewhere) and
    `VerificationFailed` (with the report; the version is left `failed`).
    """
    if workers > 1 and dsn is None:
        raise ValueError("a parallel rebuild needs the database URL for its worker processes")
    options = _Options(
        dsn, workers, page_size, batch_size, copy_chunk, before_verify, swap, refold, max_quarantined
    )
    sink: ProgressSink = progress or _NoProgress()
    version = projection.version
    report = RebuildReport(projection.name, version)
    async with connection(pool) as conn:
        await conn.execute("SET statement_timeout = 0")
        # The lock first: a refused rebuild must leave the registry as it was (a `previous`
        # version stays the rollback target, a `failed` one keeps its report).
        key = projection.lock_key()
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            raise registry.RebuildLocked(
                f"projection {projection.name!r} v{version} is held by another runner or rebuild"
            )
        try:
            report.previous = await registry.begin_build(conn, projection)
            await conn.execute(
                f"SET application_name = '{registry.application_name(projection, 'rebuilding')}'"
            )
            if workers > 1:
                with bulk.WorkerPool(workers) as workers_pool:
                    await _build(conn, projection, report, sink, options, db=pool, pool=workers_pool)
            else:
                await _build(conn, projection, report, sink, options, db=pool, pool=None)
        finally:
            await _unlock(conn, key)
    return report


async def _unlock(conn: asyncpg.Connection, key: int) -> None:
    """Release the version's lock. A connection an error left unusable (a statement cut off
    mid-way) is dropped instead: the server frees the lock with the session, and the error
    that stopped the rebuild is the one raised, not this one."""
    if conn.is_closed():
        return
    try:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
    except (asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
        conn.terminate()


async def _connect(dsn: str | None) -> asyncpg.Connection:
    """A helper connection of the index phase (no statement timeout: an index build takes long)."""
    return await asyncpg.connect(dsn, server_settings={"statement_timeout": "0"})


async def _build(
    conn: asyncpg.Connection,
    projection: Projection,
    report: RebuildReport,
    sink: ProgressSink,
    options: _Options,
    *,
    db: asyncpg.Pool,
    pool: bulk.WorkerPool | None,
) -> None:
    version = projection.version
    timer = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal timer
        now = time.perf_counter()
        report.seconds[name] = report.seconds.get(name, 0.0) + now - timer
        timer = now

    await reads.check_xid_horizon(conn)  # the bulk's upper bound and the catch-up trust xids
    await tables.create_tables(conn, projection, version)
    await checksums.create(conn, projection, version)
    await quarantine.release_all(conn, projection.name, version)  # a failed build's leftovers
    upper = await reads.head(conn)
    sink.phase(
        "bulk",
        await conn.fetchval(
            "SELECT count(*) FROM events WHERE (tx, position) <= ($1::xid8, $2::bigint)",
            upper.tx,
            upper.position,
        ),
    )
    ranges = await partition.stream_ranges(conn, options.workers, upper)
    parts = [
        bulk.Part(
            options.dsn or "",
            projection,
            version,
            upper,
            streams,
            options.page_size,
            options.copy_chunk,
            options.max_quarantined,
        )
        for streams in ranges
    ]
    if pool is not None:
        report.bulk_events, report.orders = await bulk.load_parallel(parts, sink.advance, pool)
    else:
        async with connection(db) as writer:
            report.bulk_events, report.orders = await bulk.load_part(conn, writer, parts[0], sink.advance)
    async with conn.transaction():
        await save_checkpoint(conn, projection.checkpoint_name(), upper)
    lap("bulk")
    sink.phase("index")
    helpers: list[asyncpg.Connection] = []
    try:
        for _ in range(options.workers - 1 if pool else 0):
            helpers.append(await _connect(options.dsn))  # noqa: PERF401 - close those opened if one fails
        await tables.create_indexes(conn, projection, version, helpers)
    except BaseException:
        for helper in helpers:  # a build may still run on it: drop the connection, not wait
            helper.terminate()
        raise
    for helper in helpers:
        await helper.close()
    lap("index")

    sink.phase("catch-up")
    # The bulk fold keeps no states: the catch-up folds the few orders it touches from the store.
    folder = OrderFolder()
    held = await quarantine.streams(conn, projection.name, version)
    checkpoint, applied = await catch_up(
        conn, projection, version, folder, upper, batch_size=options.batch_size, quarantined=held
    )
    report.catchup_events += applied
    lap("catchup")

    # Progress in rows read back (the tables were just analysed: their estimates are close),
    # plus the events folded again when refolding.
    rows = await tables.estimated_rows(conn, projection, version)
    sink.phase("verify", rows + (report.bulk_events + report.catchup_events if options.refold else 0))
    if options.before_verify is not None:
        await options.before_verify(conn, projection, version)
    report.verification = await verify(
        conn,
        projection,
        version,
        checkpoint,
        upper=None if options.refold else upper,
        dsn=options.dsn,
        workers=options.workers,
        pool=pool,
        advance=sink.advance,
    )
    lap("verify")
    if pool is not None:
        report.worker_peak_rss_mib = round(pool.peak_rss_kib / 1024)
    if not report.verification.ok:
        await registry.set_status(conn, projection.name, version, "failed", report.as_json())
        raise VerificationFailed(report.verification)
    await checksums.drop(conn, projection, version)  # kept only while a failure needs inspecting

    sink.phase("swap")
    checkpoint, applied = await catch_up(
        conn, projection, version, folder, checkpoint, batch_size=options.batch_size, quarantined=held
    )
    report.catchup_events += applied
    report.quarantined = sorted(held)
    if options.swap:
        report.previous = await registry.swap(conn, projection, version)
        report.swapped = True
    await registry.set_status(
        conn, projection.name, version, "live" if options.swap else "ready", report.as_json()
    )
    lap("swap")

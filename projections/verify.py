"""Verification of a built version against a fold of the log at one checkpoint.

The rows in the tables went through the bulk load (COPY) and then the live runner's batches
(state cache, delete-and-COPY per touched order). The server reduces them to per-order row
counts and checksums over a canonical text (`canonical`, the same text Python writes for rows a
fold derives), and those are compared with one of two references:

- **recorded** (a rebuild's default): the checksums the bulk fold recorded for the rows it
  derived (`checksums`), after checking that it folded exactly the log's events at its own
  checkpoint (count and last version per stream); orders the catch-up touched are folded again
  from scratch. No second fold of the whole log.
- **refold**: an independent fold of the whole log up to the checkpoint, per stream (`ORDER BY
  stream_id, version`), from scratch with the domain's `fold`, mapped by the row function.
  About as costly as the build; also what the tests use as their oracle.

Any difference is reported and refuses the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import asyncpg

from ledger.repository import fold_rows
from ledger.store.pool import init_connection
from ledger.store.records import Checkpoint
from ledger_kernel.wire.streams import ORDER_STREAM_PREFIX
from projections import checksums, quarantine
from projections.bulk import (
    READ_IN_STREAM_ORDER,
    WorkerPool,
    gc_paused,
    peak_rss_kib,
    report_progress,
    run_watched,
)
from projections.canonical import checksum_sql, order_checksums, sql_checksum
from projections.definition import Projection
from projections.partition import WHOLE_LOG, StreamRange, stream_ranges

_LOG_SQL = """
SELECT stream_id, version, type, schema_version, data::text, recorded_at FROM events
 WHERE (tx, position) <= ($1::xid8, $2::bigint){streams}
 ORDER BY stream_id, version
"""
_PAGE = 20_000
_MAX_LISTED = 1000
#: The most events a verification part covers (about 350k orders: ~100 MB of checksums held).
_EVENTS_PER_PART = 2_000_000
#: The `table` of a difference between the log and what the bulk load folded.
LOG = "events"


@dataclass
class Difference:
    order_id: str
    table: str  # a table base, or `LOG` (the events folded differ from the log's)
    kind: str  # "missing" (in the fold, not the table; in the log, not folded), "extra", or "different"


@dataclass
class VerifyReport:
    """Outcome of a verification; `ok` only when counts and every per-order checksum match."""

    projection: str
    version: int
    checkpoint: Checkpoint
    orders: int = 0
    expected_rows: dict[str, int] = field(default_factory=dict)
    actual_rows: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    difference_count: int = 0
    #: "recorded" or "refold" (see the module docstring).
    reference: str = "refold"

    @property
    def ok(self) -> bool:
        return self.difference_count == 0 and self.expected_rows == self.actual_rows

    def add(self, difference: Difference) -> None:
        self.difference_count += 1
        if len(self.differences) < _MAX_LISTED:
            self.differences.append(difference)

    def as_json(self, limit: int = 20) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reference": self.reference,
            "checkpoint": [self.checkpoint.tx, self.checkpoint.position],
            "orders": self.orders,
            "expected_rows": self.expected_rows,
            "actual_rows": self.actual_rows,
            "difference_count": self.difference_count,
            "differences": [d.__dict__ for d in self.differences[:limit]],
        }


Checksums = dict[str, dict[str, tuple[int, bytes]]]


def _ignore(n: int) -> None:
    """No progress sink."""


async def expected_checksums(
    conn: asyncpg.Connection,
    projection: Projection,
    checkpoint: Checkpoint,
    part: StreamRange = WHOLE_LOG,
    streams: Sequence[str] | None = None,
    *,
    advance: Callable[[int], None] = _ignore,
    skip: Collection[str] = (),
) -> Checksums:
    """Checksums from a per-stream fold from scratch of every event up to `checkpoint`.

    `streams` restricts the fold to those stream ids (the orders a catch-up touched); `advance`
    gets the number of events read, page by page. Streams in `skip` (quarantined: the version
    holds no rows it could vouch for) are not folded.
    """
    out: Checksums = {}
    if streams is not None and not streams:
        return out
    stream: str | None = None
    batch: list[Any] = []

    def flush() -> None:
        if not batch or batch[0][0] in skip:
            return
        order = fold_rows(batch)
        assert order is not None  # the batch has events
        out[str(order.id)] = order_checksums(projection, dict(projection.rows(order)))

    where, bounds = part.where("stream_id", 3)
    args: list[Any] = list(bounds)
    if streams is not None:
        where += f" AND stream_id = ANY(${3 + len(args)}::text[])"
        args = [*args, list(streams)]
    async with conn.transaction(readonly=True):
        await conn.execute(READ_IN_STREAM_ORDER)
        cursor = await conn.cursor(_LOG_SQL.format(streams=where), checkpoint.tx, checkpoint.position, *args)
        while page := await cursor.fetch(_PAGE):
            for row in page:
                if row[0] != stream:
                    flush()
                    batch, stream = [], row[0]
                batch.append(row)
            advance(len(page))
    flush()
    return out


async def actual_checksums(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    part: StreamRange = WHOLE_LOG,
    advance: Callable[[int], None] = _ignore,
) -> Checksums:
    """Checksums of what a version's tables hold, per order, computed by the server
    (`canonical.checksum_sql`): only one aggregate per order and table crosses the wire.
    `advance` gets the number of rows checksummed, page by page."""
    out: Checksums = {}
    for table in projection.tables:
        # The same range predicate as the log side, on the stream id each row belongs to.
        streams, args = part.where(f"('{ORDER_STREAM_PREFIX}' || {table.key}::text)", 1)
        sql = checksum_sql(table, table.physical(version), streams)
        base = table.base
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            while page := await cursor.fetch(_PAGE):
                rows = 0
                for order_id, count, total in page:
                    out.setdefault(order_id, {})[base] = sql_checksum(count, total)
                    rows += count
                advance(rows)
    return out


def compare(
    projection: Projection, version: int, checkpoint: Checkpoint, expected: Checksums, actual: Checksums
) -> VerifyReport:
    """The report of one partition (or of the whole log)."""
    report = VerifyReport(projection.name, version, checkpoint, orders=len(expected))
    empty = order_checksums(projection, {})
    for table in projection.tables:
        base = table.base
        report.expected_rows[base] = sum(c.get(base, empty[base])[0] for c in expected.values())
        report.actual_rows[base] = sum(c.get(base, empty[base])[0] for c in actual.values())
    for order_id in sorted(expected.keys() | actual.keys()):
        want = expected.get(order_id, empty)
        have = actual.get(order_id, empty)
        for table in projection.tables:
            base = table.base
            if want.get(base, empty[base]) == have.get(base, empty[base]):
                continue
            kind = "missing" if base not in have else "extra" if want[base][0] == 0 else "different"
            report.add(Difference(order_id, base, kind))
    return report


async def verify_part(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    checkpoint: Checkpoint,
    part: StreamRange,
    *,
    upper: Checkpoint | None = None,
    advance: Callable[[int], None] = _ignore,
) -> VerifyReport:
    """One part against a refold (`upper` None) or against what the bulk load up to `upper` recorded.

    `advance` gets the rows read back (and, refolding, the events folded) as they are.
    """
    # Quarantined orders are not compared: the version serves them as stale (their rows are
    # whatever was last written, if anything), and the report lists them instead.
    skip = await quarantine.streams(conn, projection.name, version)
    with gc_paused():  # same reason as the bulk fold: large, long-lived, cycle-free data
        if upper is None:
            expected = await expected_checksums(
                conn, projection, checkpoint, part, advance=advance, skip=skip
            )
            log_differences: list[tuple[str, str]] = []
        else:
            log_differences = await checksums.completeness(conn, projection, version, upper, part)
            expected = await checksums.recorded(conn, projection, version, part)
            touched = await checksums.touched_streams(conn, upper, checkpoint, part)
            expected.update(await expected_checksums(conn, projection, checkpoint, part, touched, skip=skip))
        actual = await actual_checksums(conn, projection, version, part, advance)
        for stream in skip:
            order_id = stream.removeprefix(ORDER_STREAM_PREFIX)
            expected.pop(order_id, None)
            actual.pop(order_id, None)
        report = compare(projection, version, checkpoint, expected, actual)
    report.reference = "refold" if upper is None else "recorded"
    for order_id, kind in log_differences:
        report.add(Difference(order_id, LOG, kind))
    return report


async def _parts(conn: asyncpg.Connection, workers: int) -> int:
    """At least one part per worker, and enough that none holds more than `_EVENTS_PER_PART` events.

    A part keeps two checksums per order in memory (expected and actual) until it compares
    them, so bounding its size bounds a verification's memory however long the log is.
    """
    estimate = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
    return max(workers, math.ceil(max(estimate or 0.0, 0.0) / _EVENTS_PER_PART))


def _verify_worker(
    dsn: str,
    projection: Projection,
    version: int,
    checkpoint: Checkpoint,
    part: StreamRange,
    *,
    upper: Checkpoint | None,
) -> tuple[VerifyReport, int]:
    async def main() -> VerifyReport:
        # No parallel query: the parts already keep every core busy, and a part's checksum query
        # with its own parallel workers was measured 25% slower (gather and merge on top).
        conn = await asyncpg.connect(
            dsn, server_settings={"statement_timeout": "0", "max_parallel_workers_per_gather": "0"}
        )
        try:
            await init_connection(conn)
            return await verify_part(
                conn, projection, version, checkpoint, part, upper=upper, advance=report_progress
            )
        finally:
            await conn.close()

    return asyncio.run(main()), peak_rss_kib()


async def verify(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    checkpoint: Checkpoint,
    *,
    upper: Checkpoint | None = None,
    dsn: str | None = None,
    workers: int = 1,
    pool: WorkerPool | None = None,
    advance: Callable[[int], None] = _ignore,
) -> VerifyReport:
    """Compare `version`'s tables (which must be exactly at `checkpoint`) with a fold of the log.

    With `upper` (the checkpoint a bulk load stopped at, having recorded its `checksums`) the
    reference is what that load recorded, else a fresh fold of the whole log (module docstring).
    With `workers > 1` the log is split by stream id range, as in the bulk load, across processes
    (`pool`'s, e.g. the rebuild's already running workers, which also keeps their peak RSS, else
    a pool of their own). `advance` gets the progress in rows read back (and events refolded).
    """
    parallel = dsn is not None and workers > 1
    ranges = await stream_ranges(conn, await _parts(conn, workers if parallel else 1), checkpoint)
    if dsn is None or not parallel or len(ranges) == 1:
        reports = [
            await verify_part(conn, projection, version, checkpoint, part, upper=upper, advance=advance)
            for part in ranges
        ]
    else:
        with contextlib.ExitStack() as stack:
            if pool is None:
                pool = stack.enter_context(WorkerPool(min(workers, len(ranges))))
            calls = [
                partial(_verify_worker, dsn, projection, version, checkpoint, part, upper=upper)
                for part in ranges
            ]
            results = await run_watched(pool, calls, advance)
            pool.note_peak(max(peak for _, peak in results))
        reports = [part for part, _ in results]
    if len(reports) == 1:
        return reports[0]
    report = VerifyReport(projection.name, version, checkpoint)
    for one in reports:
        report.reference = one.reference
        report.orders += one.orders
        for base, count in one.expected_rows.items():
            report.expected_rows[base] = report.expected_rows.get(base, 0) + count
        for base, count in one.actual_rows.items():
            report.actual_rows[base] = report.actual_rows.get(base, 0) + count
        report.difference_count += one.difference_count
        report.differences += one.differences[: _MAX_LISTED - len(report.differences)]
    return report

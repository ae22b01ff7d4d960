"""A read model's side: each order's rows against a fold of its events at the projection's checkpoint.

The projection's live runner writes an order's rows and its checkpoint in one transaction, so one
repeatable-read snapshot sees a checkpoint and the rows it implies. Within that snapshot the
chunk's orders are folded from scratch up to the checkpoint and their rows' checksums, computed by
the server, compared with the fold's (`projections.verify`, the rebuild's own verification).
A missing row, a row at an older version or with an event's effect taken out all differ.
Quarantined orders are counted, not compared: the projection already reports them as stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg

from ledger.domain.events import decode_event
from ledger.domain.state import fold
from ledger.store.records import Checkpoint
from ledger.store.store import load_checkpoint
from ledger_app.reconcile.log import OrderSpan
from ledger_app.reconcile.report import READ_MODEL_DIFFERS, Mismatch, projection_place
from ledger_kernel.wire.streams import ORDER_STREAM_PREFIX
from projections import catalog, quarantine, registry
from projections.bulk import READ_IN_STREAM_ORDER
from projections.canonical import checksum_sql, order_checksums, sql_checksum
from projections.definition import Projection
from projections.verify import Checksums


@dataclass
class ReadModelCheck:
    """Figures of one chunk for one projection."""

    mismatches: list[Mismatch] = field(default_factory=list)
    orders: int = 0
    quarantined: int = 0
    behind: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class _Plan:
    name: str
    projection: Projection
    live: int
    checkpoint: Checkpoint
    skip: frozenset[str]


async def check_projections(
    pool: asyncpg.Pool, names: Sequence[str], spans: Sequence[OrderSpan]
) -> dict[str, ReadModelCheck]:
    """Each projection's rows of the chunk's orders against a fold at its checkpoint.

    One snapshot for all of them; projections at the same checkpoint (the usual case: both
    caught up) share one fold of each order.
    """
    out = {name: ReadModelCheck() for name in names}
    if not spans:
        return out
    streams = [s.stream_id for s in spans]
    async with pool.acquire() as proxy, proxy.transaction(isolation="repeatable_read", readonly=True):
        conn = cast("asyncpg.Connection", proxy)  # the pool's proxy forwards every call
        plans: dict[Checkpoint, list[_Plan]] = {}
        for name in names:
            projection = catalog.get(name)
            live = await registry.live_version(conn, name)
            if live is None or live != projection.version:
                # Not built, or built by other code than this deploy's: nothing to refold it with.
                out[name].skipped = len(spans)
                continue
            # Built but never run (no checkpoint): every row must be absent, as a fold of nothing.
            checkpoint = await load_checkpoint(conn, projection.checkpoint_name(live)) or Checkpoint(0, 0)
            skip = frozenset(await quarantine.streams(conn, name, live) & set(streams))
            plans.setdefault(checkpoint, []).append(_Plan(name, projection, live, checkpoint, skip))
        for checkpoint, group in plans.items():
            folded = await _fold_checksums(conn, [plan.projection for plan in group], checkpoint, streams)
            versions = await _checkpoint_versions(conn, streams, checkpoint)
            for plan, expected in zip(group, folded, strict=True):
                await _compare(conn, plan, spans, expected, versions=versions, out=out[plan.name])
    return out


async def _compare(
    conn: asyncpg.Connection,
    plan: _Plan,
    spans: Sequence[OrderSpan],
    expected: Checksums,
    *,
    versions: dict[str, int],
    out: ReadModelCheck,
) -> None:
    for stream in plan.skip:
        expected.pop(stream.removeprefix(ORDER_STREAM_PREFIX), None)
    kept = [s for s in spans if s.stream_id not in plan.skip]
    actual = await _actual_checksums(conn, plan.projection, plan.live, [s.order_id for s in kept])
    differences = _differences(plan.projection, expected, actual)
    out.quarantined = len(plan.skip)
    out.orders = len(kept)
    out.behind = sum(1 for s in kept if versions.get(s.stream_id, 0) < s.last)
    row_versions = await _row_versions(
        conn, plan.projection, plan.live, sorted({order_id for order_id, _, _ in differences})
    )
    place = projection_place(plan.name)
    for order_id, table, kind in differences:
        want = versions.get(f"{ORDER_STREAM_PREFIX}{order_id}", 0)
        have = row_versions.get(order_id)
        at = "" if have is None else f"; its row is at version {have}"
        detail = (
            f"{table} rows {kind}: a fold at checkpoint {plan.checkpoint.position} gives version {want}{at}"
        )
        out.mismatches.append(Mismatch(READ_MODEL_DIFFERS, place, order_id, detail))


_LOG_SQL = """
SELECT stream_id, version, type, schema_version, data::text, recorded_at FROM events
 WHERE stream_id = ANY($3::text[]) AND (tx, position) <= ($1::xid8, $2::bigint)
 ORDER BY stream_id, version
"""


async def _fold_checksums(
    conn: asyncpg.Connection, projections: Sequence[Projection], checkpoint: Checkpoint, streams: list[str]
) -> list[Checksums]:
    """Per projection, the checksums of the rows a fold from scratch of each order up to
    `checkpoint` derives (`projections.verify.expected_checksums`, one fold for all of them)."""
    out: list[Checksums] = [{} for _ in projections]
    batch: list[Any] = []

    def flush() -> None:
        if not batch:
            return
        order = fold((decode_event(r[2], r[4], schema_version=r[3]), r[1], r[5]) for r in batch)
        for projection, checksums in zip(projections, out, strict=True):
            checksums[str(order.id)] = order_checksums(projection, dict(projection.rows(order)))

    stream: str | None = None
    async with conn.transaction(readonly=True):
        await conn.execute(READ_IN_STREAM_ORDER)
        cursor = await conn.cursor(_LOG_SQL, checkpoint.tx, checkpoint.position, streams)
        while page := await cursor.fetch(5_000):
            for row in page:
                if row[0] != stream:
                    flush()
                    batch, stream = [], row[0]
                batch.append(row)
    flush()
    return out


def _differences(
    projection: Projection, expected: Checksums, actual: Checksums
) -> list[tuple[str, str, str]]:
    """(order id, table, kind) for every order and table whose rows differ; kind is `missing`
    (the fold has rows the table lacks), `extra` (the other way) or `different`."""
    empty = order_checksums(projection, {})
    out: list[tuple[str, str, str]] = []
    for order_id in sorted(expected.keys() | actual.keys()):
        want = expected.get(order_id, empty)
        have = actual.get(order_id, empty)
        for table in projection.tables:
            base = table.base
            w, h = want.get(base, empty[base]), have.get(base, empty[base])
            if w == h:
                continue
            kind = "missing" if h[0] == 0 else "extra" if w[0] == 0 else "different"
            out.append((order_id, base, kind))
    return out


async def _actual_checksums(
    conn: asyncpg.Connection, projection: Projection, version: int, order_ids: list[str]
) -> Checksums:
    out: Checksums = {}
    for table in projection.tables:
        sql = checksum_sql(table, table.physical(version), f" AND {table.key}::text = ANY($1::text[])")
        for order_id, count, total in await conn.fetch(sql, order_ids):
            out.setdefault(order_id, {})[table.base] = sql_checksum(count, total)
    return out


async def _checkpoint_versions(
    conn: asyncpg.Connection, streams: list[str], checkpoint: Checkpoint
) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT stream_id, max(version) FROM events WHERE stream_id = ANY($1::text[])"
        " AND (tx, position) <= ($2::xid8, $3::bigint) GROUP BY stream_id",
        streams,
        checkpoint.tx,
        checkpoint.position,
    )
    return {r[0]: r[1] for r in rows}


async def _row_versions(
    conn: asyncpg.Connection, projection: Projection, version: int, order_ids: list[str]
) -> dict[str, int]:
    """The `version` column of the orders' rows, where the projection keeps one."""
    if not order_ids:
        return {}
    for table in projection.tables:
        if "version" in table.column_names:
            rows = await conn.fetch(
                f"SELECT {table.key}::text, max(version) FROM {table.physical(version)}"
                f" WHERE {table.key}::text = ANY($1::text[]) GROUP BY {table.key}",
                order_ids,
            )
            return {r[0]: r[1] for r in rows}
    return {}

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
from typing import cast

import asyncpg

from ledger.store.records import Checkpoint
from ledger.store.store import load_checkpoint
from ledger_app.reconcile.log import OrderSpan
from ledger_app.reconcile.report import READ_MODEL_DIFFERS, Mismatch, projection_place
from projections import catalog, quarantine, registry
from projections.canonical import checksum_sql, order_checksums, sql_checksum
from projections.definition import Projection
from projections.verify import Checksums, expected_checksums


@dataclass
class ReadModelCheck:
    """Figures of one chunk for one projection."""

    mismatches: list[Mismatch] = field(default_factory=list)
    orders: int = 0
    quarantined: int = 0
    behind: int = 0
    skipped: int = 0


async def check_projection(pool: asyncpg.Pool, name: str, spans: Sequence[OrderSpan]) -> ReadModelCheck:
    projection = catalog.get(name)
    out = ReadModelCheck()
    place = projection_place(name)
    if not spans:
        return out
    async with pool.acquire() as proxy, proxy.transaction(isolation="repeatable_read", readonly=True):
        conn = cast("asyncpg.Connection", proxy)  # the pool's proxy forwards every call
        live = await registry.live_version(conn, name)
        checkpoint = None if live is None else await load_checkpoint(conn, projection.checkpoint_name(live))
        if live is None or live != projection.version:
            # Not built, or built by other code than this deploy's: nothing to refold it with.
            out.skipped = len(spans)
            return out
        streams = [s.stream_id for s in spans]
        skip = await quarantine.streams(conn, name, live) & set(streams)
        out.quarantined = len(skip)
        if checkpoint is None:
            # Built but never run: every row must be absent, which the comparison shows.
            checkpoint = Checkpoint(0, 0)
        expected = await expected_checksums(conn, projection, checkpoint, streams=streams, skip=skip)
        actual = await _actual_checksums(
            conn, projection, live, [s.order_id for s in spans if s.stream_id not in skip]
        )
        differences = _differences(projection, expected, actual)
        versions = await _checkpoint_versions(conn, streams, checkpoint)
        out.orders = len(spans) - len(skip)
        out.behind = sum(
            1 for s in spans if s.stream_id not in skip and versions.get(s.stream_id, 0) < s.last
        )
        row_versions = await _row_versions(
            conn, projection, live, sorted({order_id for order_id, _, _ in differences})
        )
        for order_id, table, kind in differences:
            want = versions.get(f"order-{order_id}", 0)
            have = row_versions.get(order_id)
            at = "" if have is None else f"; its row is at version {have}"
            out.mismatches.append(
                Mismatch(
                    READ_MODEL_DIFFERS,
                    place,
                    order_id,
                    f"{table} rows {kind}: a fold at checkpoint"
                    f" {checkpoint.position} gives version {want}{at}",
                )
            )
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

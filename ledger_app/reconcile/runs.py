"""The store of reconciliation runs (migration 0017): begin, save a checked chunk, finish, read.

A chunk's mismatches, its counts and the position it checked through are saved in one
transaction, so a run stopped anywhere resumes after its last saved chunk with nothing counted
twice and nothing lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg
import orjson

from ledger_app.reconcile.report import Mismatch, ReconcileReport

Counts = dict[str, dict[str, int]]

_RUN_COLUMNS = (
    "id, started_at, finished_at, status, from_position, to_position, checked_through, counts,"
    " mismatch_count, error"
)


async def begin(pool: asyncpg.Pool, from_position: int, to_position: int) -> ReconcileReport:
    row = await pool.fetchrow(
        "INSERT INTO reconcile_runs (from_position, to_position, checked_through)"
        f" VALUES ($1, $2, $3) RETURNING {_RUN_COLUMNS}",
        from_position,
        to_position,
        from_position - 1,
    )
    assert row is not None
    return _report(row, ())


async def save_chunk(
    pool: asyncpg.Pool,
    run_id: int,
    checked_through: int,
    counts: Mapping[str, Mapping[str, int]],
    mismatches: Sequence[Mismatch],
    *,
    max_stored: int,
) -> None:
    """Record a checked chunk: its mismatches (up to `max_stored` per run), counts and progress."""
    async with pool.acquire() as conn, conn.transaction():
        stored: int = await conn.fetchval(
            "SELECT count(*) FROM reconcile_mismatches WHERE run_id = $1", run_id
        )
        keep = mismatches[: max(max_stored - stored, 0)]
        if keep:
            await conn.copy_records_to_table(
                "reconcile_mismatches",
                records=[
                    (run_id, stored + n, m.kind, m.place, m.order_id, m.detail) for n, m in enumerate(keep)
                ],
                columns=["run_id", "seq", "kind", "place", "order_id", "detail"],
            )
        await conn.execute(
            "UPDATE reconcile_runs SET checked_through = $2, counts = $3::text::jsonb,"
            " mismatch_count = mismatch_count + $4 WHERE id = $1",
            run_id,
            checked_through,
            orjson.dumps(counts).decode(),
            len(mismatches),
        )


async def finish(pool: asyncpg.Pool, run_id: int, *, error: str | None = None) -> None:
    await pool.execute(
        "UPDATE reconcile_runs SET finished_at = clock_timestamp(), status = $2, error = $3 WHERE id = $1",
        run_id,
        "failed" if error is not None else "finished",
        error,
    )


async def last_run(pool: asyncpg.Pool) -> ReconcileReport | None:
    """The newest run without its mismatches (what `--resume` continues from)."""
    row = await pool.fetchrow(f"SELECT {_RUN_COLUMNS} FROM reconcile_runs ORDER BY id DESC LIMIT 1")
    return None if row is None else _report(row, ())


async def reopen(pool: asyncpg.Pool, run_id: int) -> None:
    """Mark an interrupted (or failed) run as running again before resuming it."""
    await pool.execute(
        "UPDATE reconcile_runs SET status = 'running', finished_at = NULL, error = NULL WHERE id = $1", run_id
    )


async def report(pool: asyncpg.Pool, run_id: int, *, limit: int = 1000) -> ReconcileReport | None:
    """A run with its first `limit` stored mismatches."""
    row = await pool.fetchrow(f"SELECT {_RUN_COLUMNS} FROM reconcile_runs WHERE id = $1", run_id)
    if row is None:
        return None
    rows = await pool.fetch(
        "SELECT kind, place, order_id, detail FROM reconcile_mismatches WHERE run_id = $1"
        " ORDER BY seq LIMIT $2",
        run_id,
        limit,
    )
    return _report(row, tuple(Mismatch(r["kind"], r["place"], r["order_id"], r["detail"]) for r in rows))


async def latest_report(pool: asyncpg.Pool, *, limit: int = 1000) -> ReconcileReport | None:
    """The newest run (running, finished or failed) with its first `limit` mismatches, or None."""
    run_id = await pool.fetchval("SELECT max(id) FROM reconcile_runs")
    return None if run_id is None else await report(pool, run_id, limit=limit)


def _report(row: asyncpg.Record, mismatches: tuple[Mismatch, ...]) -> ReconcileReport:
    counts = row["counts"]
    if isinstance(counts, str | bytes):
        counts = orjson.loads(counts)
    return ReconcileReport(
        id=row["id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=row["status"],
        from_position=row["from_position"],
        to_position=row["to_position"],
        checked_through=row["checked_through"],
        counts=counts,
        mismatch_count=row["mismatch_count"],
        mismatches=mismatches,
        error=row["error"],
    )

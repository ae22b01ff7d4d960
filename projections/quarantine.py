"""Orders a projection version could not apply: recorded, shown, skipped, folded again later.

The log is immutable, so an event that no code of this deploy can apply (it cannot be decoded
or folded, or the database refuses its rows: a date PostgreSQL cannot hold, say) would stop a
runner for every order if it were allowed to raise: each restart meets it again. Instead the
runner quarantines that order in that projection version (table `projection_quarantine`,
migration 0042): its last good rows stay, readers are told they are stale, its later events
are skipped, and everything else keeps flowing. A runner folds its quarantined orders again
from their whole streams when it takes over (a deploy with a fix) and whenever an operator
asks (`ledger projections refold`, which sets `retry_requested`); a rebuild of a new version
records the orders it could not fold in that version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

#: What an error text is cut to (an exception may carry a whole row).
_MAX_ERROR = 2000


@dataclass(frozen=True, slots=True)
class Failure:
    """One order a projection could not apply: the first event that failed and why."""

    stream_id: str
    event_version: int
    position: int | None
    error: str


def describe(exc: BaseException) -> str:
    """`Type: message`, bounded: what an operator reads in `ledger projections quarantine`."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


async def record(conn: asyncpg.Connection, name: str, version: int, failures: Iterable[Failure]) -> None:
    """Quarantine orders (or refresh the error of ones already quarantined), in the caller's transaction."""
    rows = [(name, version, f.stream_id, f.event_version, f.position, f.error) for f in failures]
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO projection_quarantine (projection, version, stream_id, event_version, position, error)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (projection, version, stream_id) DO UPDATE SET event_version = excluded.event_version,"
        " position = excluded.position, error = excluded.error, quarantined_at = clock_timestamp(),"
        " retry_requested = false",
        rows,
    )


async def release(conn: asyncpg.Connection, name: str, version: int, streams: Iterable[str]) -> None:
    """Forget orders that were folded again successfully."""
    ids = list(streams)
    if ids:
        await conn.execute(
            "DELETE FROM projection_quarantine WHERE projection = $1 AND version = $2 AND stream_id = ANY($3)",
            name,
            version,
            ids,
        )


async def release_all(conn: asyncpg.Connection, name: str, version: int) -> None:
    """Forget a version's quarantine (its tables are being built again from the log)."""
    await conn.execute(
        "DELETE FROM projection_quarantine WHERE projection = $1 AND version = $2", name, version
    )


async def streams(db: asyncpg.Connection | asyncpg.Pool, name: str, version: int) -> set[str]:
    """Every quarantined order of a version (a small set: each one is an incident)."""
    rows = await db.fetch(
        "SELECT stream_id FROM projection_quarantine WHERE projection = $1 AND version = $2", name, version
    )
    return {r["stream_id"] for r in rows}


async def retry_requested(conn: asyncpg.Connection, name: str, version: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT stream_id FROM projection_quarantine WHERE projection = $1 AND version = $2 AND retry_requested",
        name,
        version,
    )
    return [r["stream_id"] for r in rows]


async def request_retry(
    db: asyncpg.Connection | asyncpg.Pool, name: str, version: int, stream_ids: Iterable[str] | None = None
) -> int:
    """Ask the version's runner to fold these orders (None: every one) again; returns how many."""
    ids = None if stream_ids is None else list(stream_ids)
    result: str = await db.execute(
        "UPDATE projection_quarantine SET retry_requested = true"
        " WHERE projection = $1 AND version = $2 AND ($3::text[] IS NULL OR stream_id = ANY($3))",
        name,
        version,
        ids,
    )
    return int(result.rsplit(maxsplit=1)[-1])


async def count(db: asyncpg.Connection | asyncpg.Pool, name: str, version: int) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM projection_quarantine WHERE projection = $1 AND version = $2", name, version
    )
    return n


async def entries(db: asyncpg.Connection | asyncpg.Pool, name: str, version: int) -> list[asyncpg.Record]:
    """The quarantined orders of a version with their first failing event and error (CLI)."""
    return await db.fetch(
        "SELECT stream_id, event_version, position, error, quarantined_at, retry_requested"
        " FROM projection_quarantine WHERE projection = $1 AND version = $2 ORDER BY quarantined_at, stream_id",
        name,
        version,
    )


async def stale_projections(db: asyncpg.Connection | asyncpg.Pool, stream_id: str) -> list[str]:
    """The projections whose live version serves stale rows for this order (none: fresh)."""
    rows = await db.fetch(
        "SELECT q.projection FROM projection_quarantine q JOIN projection_versions v"
        " ON v.projection = q.projection AND v.version = q.version AND v.status = 'live'"
        " WHERE q.stream_id = $1 ORDER BY q.projection",
        stream_id,
    )
    return [r["projection"] for r in rows]


async def stale_streams(db: asyncpg.Connection | asyncpg.Pool, name: str, stream_ids: list[str]) -> set[str]:
    """Which of these orders the projection's live version serves stale rows for."""
    if not stream_ids:
        return set()
    rows = await db.fetch(
        "SELECT q.stream_id FROM projection_quarantine q JOIN projection_versions v"
        " ON v.projection = q.projection AND v.version = q.version AND v.status = 'live'"
        " WHERE q.projection = $1 AND q.stream_id = ANY($2)",
        name,
        stream_ids,
    )
    return {r["stream_id"] for r in rows}

"""Reads of streams and of the fenced global log.

Why the fence: `position` comes from a sequence at insert time, but a row becomes visible at
commit. If T1 takes position 100, T2 takes 101 and commits first, a reader following
`position > last` moves past 100 and never sees it. So the global log is read only below
`pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction id still running anywhere
in the cluster: every row with a smaller `tx` is committed (visible) or rolled back (gone) for
good, and no transaction can ever again write a row with a smaller `tx`. Ordering by
`(tx, position)` then gives a stable total order that never inserts below a checkpoint; readers
checkpoint the pair. Writers are never serialised; the cost is that readers wait behind the
oldest open writer (keep append transactions short, watch `fence_status`). This plays the role
of the `LOCK TABLE ... IN EXCLUSIVE MODE` in eventsourcing's `_lock_table`, without making
writers queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ledger.store.errors import XidHorizonError
from ledger.store.pool import fetch_clean
from ledger.store.records import START, Checkpoint, Executor, FenceStatus, RecordedEvent

COLUMNS = (
    "position, tx, stream_id, version, event_id, type, schema_version, data, metadata, "
    "recorded_at, prev_hash, hash"
)
#: The same columns with data and metadata as text (undecoded), for fast replays. Every read
#: that returns `RecordedEvent`s selects these too and decodes the text with `orjson.loads` in
#: one comprehension (`_to_events`): the jsonb codec costs a Python call and a bytes slice per
#: value, about 0.3 us more per value (both are jsonb's canonical text on the wire).
RAW_COLUMNS = COLUMNS.replace("data, metadata", "data::text AS data, metadata::text AS metadata")
#: What the relay publishes of each event: no hash chain, data and metadata as JSON text. Text
#: skips the jsonb codec's Python call per value, and `decode_event` validates JSON text in Rust,
#: faster than a decoded dict (see `ledger.relay.foldcache`).
LOG_COLUMNS = (
    "position, tx, stream_id, version, event_id, type, schema_version, "
    "data::text AS data, metadata::text AS metadata, recorded_at"
)
FENCE = "tx < pg_snapshot_xmin(pg_current_snapshot())"

_STREAM_SQL = f"""
SELECT {RAW_COLUMNS} FROM events
 WHERE stream_id = $1 AND version >= $2
   AND ($3::integer IS NULL OR version <= $3)
   AND ($4::timestamptz IS NULL OR recorded_at <= $4)
 ORDER BY version
"""


def _all_sql(columns: str, *, with_types: bool, with_limit: bool = True) -> str:
    """$1, $2: the checkpoint; then the limit ($3) if any; then the types array."""
    types_param = 4 if with_limit else 3
    types = f" AND type = ANY(${types_param}::text[])" if with_types else ""
    limit = " LIMIT $3" if with_limit else ""
    return (
        f"SELECT {columns} FROM events WHERE (tx, position) > ($1::xid8, $2::bigint) AND {FENCE}{types}"
        f" ORDER BY tx, position{limit}"
    )


_HORIZON_SQL = """
SELECT max(tx) AS stored, pg_snapshot_xmax(pg_current_snapshot()) AS next FROM events
"""


async def check_xid_horizon(db: Executor) -> None:
    """Raise `XidHorizonError` if a stored `tx` is not below the next transaction id to be assigned.

    The fence and every checkpoint compare `tx` with live transaction ids, so they assume ids only
    grow. A dump restored into a cluster with a lower xid counter breaks that: new events get
    smaller `tx` than the restored ones and readers resuming from a restored checkpoint never see
    them. Call before a reader starts; `pg_snapshot_xmax` assigns no xid (unlike `pg_current_xact_id`).
    """
    row = await db.fetchrow(_HORIZON_SQL)
    if row is not None and row["stored"] is not None and row["stored"] >= row["next"]:
        raise XidHorizonError(
            f"stored tx {row['stored']} is at or above this cluster's next transaction id {row['next']}:"
            " the database was restored into a cluster with a lower xid counter, and readers would"
            " silently miss new events. A restore must keep the xid epoch (physical backup/replica,"
            " or advance the new cluster's xids, e.g. pg_resetwal -x, past the stored maximum)."
        )


def _to_events(rows: Sequence[asyncpg.Record]) -> list[RecordedEvent]:
    """`RAW_COLUMNS` rows as `RecordedEvent`s, data and metadata decoded from JSON text.

    Unpacking in the comprehension and `tuple.__new__` avoid an index and a call per field.
    """
    new, loads, cls = tuple.__new__, orjson.loads, RecordedEvent
    return [
        new(cls, (position, tx, sid, version, eid, type_, sv, loads(data), loads(meta), at, prev, hash_))
        for position, tx, sid, version, eid, type_, sv, data, meta, at, prev, hash_ in rows
    ]


async def read_stream(
    db: Executor,
    stream_id: str,
    from_version: int = 1,
    to_version: int | None = None,
    as_of: datetime | None = None,
) -> list[RecordedEvent]:
    """A stream's events in version order, optionally up to a version or a recorded time."""
    return _to_events(await fetch_clean(db, _STREAM_SQL, stream_id, from_version, to_version, as_of))


_PREFIXES_SQL = """
SELECT e.stream_id, e.version, e.type, e.schema_version, e.data::text AS data, e.recorded_at
  FROM unnest($1::text[], $2::integer[]) AS w(stream_id, upto)
  JOIN events e ON e.stream_id = w.stream_id AND e.version <= w.upto
 ORDER BY e.stream_id, e.version
"""


async def read_prefixes(db: Executor, upto: Mapping[str, int]) -> list[asyncpg.Record]:
    """The first events of several streams, each up to its version in `upto`, in one round trip.

    Rows `(stream_id, version, type, schema_version, data, recorded_at)` ordered by stream and
    version, `data` as JSON text: what a fold cache needs to catch up on orders it lost.
    """
    return await fetch_clean(db, _PREFIXES_SQL, list(upto), list(upto.values()))


async def stream_version(db: Executor, stream_id: str) -> int:
    """The stream's current version; 0 when it does not exist."""
    sql = "SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1"
    version: int = await db.fetchval(sql, stream_id)
    return version


async def read_all(
    db: Executor,
    after: Checkpoint = START,
    limit: int = 1000,
    types: Sequence[str] | None = None,
) -> list[RecordedEvent]:
    """Up to `limit` events after `after` in the fenced global log, in `(tx, position)` order."""
    args = _log_args(after, limit, types)
    return _to_events(await fetch_clean(db, _all_sql(RAW_COLUMNS, with_types=types is not None), *args))


def _log_args(after: Checkpoint, limit: int, types: Sequence[str] | None) -> list[Any]:
    """The arguments of `_all_sql`'s statement."""
    args: list[Any] = [after.tx, after.position, limit]
    if types is not None:
        args.append(list(types))
    return args


async def read_all_raw(
    db: Executor,
    after: Checkpoint = START,
    limit: int = 1000,
    types: Sequence[str] | None = None,
) -> list[asyncpg.Record]:
    """Like `read_all` but rows as records with `data`/`metadata` as undecoded JSON text."""
    args = _log_args(after, limit, types)
    return await db.fetch(_all_sql(RAW_COLUMNS, with_types=types is not None), *args)


async def read_log(
    db: Executor,
    after: Checkpoint = START,
    limit: int = 1000,
    types: Sequence[str] | None = None,
) -> list[asyncpg.Record]:
    """Like `read_all`, as records of `LOG_COLUMNS` (the relay's read)."""
    args = _log_args(after, limit, types)
    return await fetch_clean(db, _all_sql(LOG_COLUMNS, with_types=types is not None), *args)


async def iter_all_records(
    pool: asyncpg.Pool,
    after: Checkpoint = START,
    *,
    page_size: int = 10_000,
    types: Sequence[str] | None = None,
    raw: bool = False,
) -> AsyncIterator[list[asyncpg.Record]]:
    """Pages of the fenced log through one server-side cursor, up to the fence at the start.

    The cursor's transaction is read-only and never takes an xid, so it does not hold the fence
    back for anyone. It ends when the cursor is exhausted; continue with `read_all` or
    `subscribe` from the last event's checkpoint. Consume pages promptly: the transaction is
    subject to `idle_in_transaction_session_timeout`.
    """
    sql = _all_sql(RAW_COLUMNS if raw else COLUMNS, with_types=types is not None, with_limit=False)
    args: list[Any] = [after.tx, after.position]
    if types is not None:
        args.append(list(types))
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        cursor = await conn.cursor(sql, *args)
        while True:
            page = await cursor.fetch(page_size)
            if not page:
                return
            yield page


async def iter_all(
    pool: asyncpg.Pool,
    after: Checkpoint = START,
    *,
    page_size: int = 10_000,
    types: Sequence[str] | None = None,
) -> AsyncIterator[list[RecordedEvent]]:
    """`iter_all_records` as `RecordedEvent` pages."""
    async for page in iter_all_records(pool, after, page_size=page_size, types=types, raw=True):
        yield _to_events(page)


async def head(db: Executor) -> Checkpoint:
    """The checkpoint of the last event readable through the fence (`START` when none)."""
    row = await db.fetchrow(
        f"SELECT tx, position FROM events WHERE {FENCE} ORDER BY tx DESC, position DESC LIMIT 1"
    )
    return START if row is None else Checkpoint(row["tx"], row["position"])


async def events_after(db: Executor, after: Checkpoint) -> int:
    """How many committed events lie after `after` (fenced or not): a reader's lag in events."""
    sql = "SELECT count(*) FROM events WHERE (tx, position) > ($1::xid8, $2::bigint)"
    count: int = await db.fetchval(sql, after.tx, after.position)
    return count


async def fence_status(db: Executor) -> FenceStatus:
    """The fence and what holds it back. Seeing other sessions' xids needs `pg_monitor` (or superuser)."""
    row = await db.fetchrow(
        f"""
        SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
               (SELECT count(*) FROM events WHERE NOT ({FENCE})) AS pending,
               (SELECT coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)
                  FROM pg_stat_activity WHERE backend_xid IS NOT NULL) AS age
        """
    )
    assert row is not None
    return FenceStatus(int(row["xmin"]), int(row["pending"]), float(row["age"]))


async def read_events(
    db: Executor,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    types: Sequence[str] | None = None,
    actor: str | None = None,
    source: str | None = None,
    stream_id: str | None = None,
    after: Checkpoint | None = None,
    limit: int = 100,
) -> list[RecordedEvent]:
    """The audit feed: fenced log filtered by time range (`since <= recorded_at < until`),
    type, actor, source or stream; page with `after=<last event's checkpoint>`."""
    where = [FENCE]
    args: list[Any] = []

    def param(value: Any, cast: str) -> str:
        args.append(value)
        return f"${len(args)}::{cast}"

    if after is not None:
        where.append(f"(tx, position) > ({param(after.tx, 'xid8')}, {param(after.position, 'bigint')})")
    if since is not None:
        where.append(f"recorded_at >= {param(since, 'timestamptz')}")
    if until is not None:
        where.append(f"recorded_at < {param(until, 'timestamptz')}")
    if types is not None:
        where.append(f"type = ANY({param(list(types), 'text[]')})")
    if actor is not None:
        where.append(f"metadata->>'actor' = {param(actor, 'text')}")
    if source is not None:
        where.append(f"metadata->>'source' = {param(source, 'text')}")
    if stream_id is not None:
        where.append(f"stream_id = {param(stream_id, 'text')}")
    sql = f"SELECT {RAW_COLUMNS} FROM events WHERE {' AND '.join(where)} ORDER BY tx, position LIMIT {param(limit, 'integer')}"
    return _to_events(await db.fetch(sql, *args))

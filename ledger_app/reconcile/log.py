"""The log's side of a reconciliation: the range of positions, and the orders of each chunk.

An order is checked once per run, in the chunk that holds its last event of the range: its
versions from the first in the range to that last one are what every place must agree with.
Memory stays bounded by the chunk size, however long the log is.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ledger.store.records import Checkpoint
from ledger_kernel.wire.streams import ORDER_STREAM_PREFIX

#: The fenced head: the highest position under the xid8 fence (every event below it committed
#: or never will; docs/architecture.md#xid8-fence).
_HEAD_SQL = "SELECT coalesce(max(position), 0) FROM events WHERE tx < pg_snapshot_xmin(pg_current_snapshot())"

# $1..$2 the chunk, $3 the range's end, $4 the range's start, $5/$6 the relay checkpoint (or NULLs:
# everything counts as published).
_CHUNK_SQL = """
SELECT e.stream_id,
       e.version AS last_version,
       CASE WHEN $4::bigint <= 1 THEN 1
            ELSE (SELECT min(f.version) FROM events f
                   WHERE f.stream_id = e.stream_id AND f.position >= $4::bigint) END AS first_version,
       CASE WHEN $5::xid8 IS NULL OR (e.tx, e.position) <= ($5::xid8, $6::bigint) THEN e.version
            ELSE coalesce((SELECT max(f.version) FROM events f
                            WHERE f.stream_id = e.stream_id AND f.position >= $4::bigint
                              AND (f.tx, f.position) <= ($5::xid8, $6::bigint)), 0) END AS published_version
  FROM events e
 WHERE e.position BETWEEN $1::bigint AND $2::bigint
   AND NOT EXISTS (SELECT 1 FROM events n
                    WHERE n.stream_id = e.stream_id AND n.version = e.version + 1 AND n.position <= $3::bigint)
"""


@dataclass(frozen=True, slots=True)
class OrderSpan:
    """One order's versions in the range: `first`..`last`, of which `published` and below are
    the ones the relay's checkpoint says it published (0: none)."""

    stream_id: str
    first: int
    last: int
    published: int

    @property
    def order_id(self) -> str:
        return self.stream_id.removeprefix(ORDER_STREAM_PREFIX)


async def head(pool: asyncpg.Pool) -> int:
    value: int = await pool.fetchval(_HEAD_SQL)
    return value


async def first_position(pool: asyncpg.Pool) -> int:
    value: int | None = await pool.fetchval("SELECT min(position) FROM events")
    return value or 1


async def chunk(
    pool: asyncpg.Pool,
    lo: int,
    hi: int,
    *,
    range_start: int,
    range_end: int,
    published: Checkpoint | None,
) -> tuple[list[OrderSpan], int]:
    """The orders whose last event of the range lies in positions `lo..hi`, and the chunk's event count."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            _CHUNK_SQL,
            lo,
            hi,
            range_end,
            range_start,
            None if published is None else published.tx,
            None if published is None else published.position,
        )
        events: int = await conn.fetchval(
            "SELECT count(*) FROM events WHERE position BETWEEN $1 AND $2", lo, hi
        )
    spans = [
        OrderSpan(r["stream_id"], r["first_version"], r["last_version"], r["published_version"]) for r in rows
    ]
    spans.sort(key=lambda s: s.stream_id)
    return spans, events

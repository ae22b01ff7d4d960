"""Splitting the log into parts by stream id range, for parallel bulk loads and verifications.

A part is every stream with `lo <= stream_id < hi` (either bound open). Read through the
`(stream_id, version)` unique index, a part arrives one whole stream after another, each in
version order, so its reader folds one order at a time and never holds the whole log's orders
in memory; and it touches only its own index range and heap rows, where a `hash(stream_id) mod
parts` filter makes every part read the entire log.

Bounds are quantiles of a page sample of the log taken in the database's own collation (the
one the index and the range predicates compare with), so each stream falls in exactly one part
whatever the collation; the sample only balances the parts' sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import asyncpg

from ledger.store.records import Checkpoint

#: About this many sampled rows decide the bounds (a page sample: cheap even on a large log).
_SAMPLE_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class StreamRange:
    """Streams with `lo <= stream_id < hi`; None leaves that side open."""

    lo: str | None = None
    hi: str | None = None

    def where(self, expression: str, first_param: int) -> tuple[str, list[str]]:
        """`AND ...` predicates on `expression` (a stream id) and their arguments, numbered from `first_param`."""
        sql, args = "", []
        if self.lo is not None:
            args.append(self.lo)
            sql += f" AND {expression} >= ${first_param + len(args) - 1}::text"
        if self.hi is not None:
            args.append(self.hi)
            sql += f" AND {expression} < ${first_param + len(args) - 1}::text"
        return sql, args


WHOLE_LOG = StreamRange()


def ranges_from_bounds(bounds: list[str]) -> list[StreamRange]:
    """Consecutive ranges split at sorted `bounds` (n bounds give n + 1 ranges, covering every stream)."""
    edges: list[str | None] = [None, *bounds, None]
    return [StreamRange(lo, hi) for lo, hi in pairwise(edges)]


async def stream_ranges(conn: asyncpg.Connection, parts: int, upper: Checkpoint) -> list[StreamRange]:
    """`parts` ranges of about equal numbers of events at or below `upper` (fewer if the log is tiny)."""
    if parts <= 1:
        return [WHOLE_LOG]
    estimate = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
    percent = 100.0 if not estimate or estimate <= _SAMPLE_ROWS else 100.0 * _SAMPLE_ROWS / estimate
    bounds = await conn.fetchval(
        """
        SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY stream_id)
          FROM events TABLESAMPLE SYSTEM ($2) WHERE (tx, position) <= ($3::xid8, $4::bigint)
        """,
        [i / parts for i in range(1, parts)],
        percent,
        upper.tx,
        upper.position,
    )
    # Equal quantiles (one huge stream, a tiny log) would make empty parts: drop repeats.
    distinct = list(dict.fromkeys(b for b in bounds or () if b is not None))
    return ranges_from_bounds(distinct)

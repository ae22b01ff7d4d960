"""Per-order folded state kept in memory, so applying an event never refolds its whole stream.

The runner is the only writer of its version (advisory lock), so the states it folded are the
states behind its rows. They live in an LRU map; on a miss (first sight after a start, or an
evicted order) the order's earlier events are refolded from the store in one query for the
whole batch. Within a stream `(tx, position)` order equals version order, so every event
older than one read through the fence is committed and readable.

An order whose events cannot be folded comes back as a `quarantine.Failure`, not an
exception (see `projections.quarantine`). `apply` returns new states without touching the cache: the caller commits them with `commit`
only after its database transaction committed, so a rolled-back batch never leaves the cache
ahead of the tables.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ledger.domain.events import decode_event
from ledger.domain.state import Order, evolve
from projections.quarantine import Failure, describe

#: Raw log rows as `ledger.store.reads.RAW_COLUMNS` returns them.
POS, TX, STREAM, VERSION, EVENT_ID, TYPE, SCHEMA, DATA = range(8)
RECORDED_AT = 9

_EARLIER_SQL = """
SELECT e.stream_id, e.version, e.type, e.schema_version, e.data::text, e.recorded_at
  FROM unnest($1::text[], $2::integer[]) AS b(stream_id, below)
  JOIN events e ON e.stream_id = b.stream_id AND e.version < b.below
 ORDER BY e.stream_id, e.version
"""


def apply_one(
    state: Order | None, type_: str, schema_version: int, data: str, *, version: int, recorded_at: datetime
) -> Order:
    """Decode one stored event (trusted fast path) and evolve `state` with it."""
    event = decode_event(type_, data, schema_version=schema_version)
    return evolve(state, event, version=version, recorded_at=recorded_at)


def fold_rows(rows: Iterable[Sequence[Any]], state: Order | None = None) -> Order | None:
    """Fold `(stream_id, version, type, schema_version, data, recorded_at)` rows of one stream."""
    for row in rows:
        state = apply_one(state, row[2], row[3], row[4], version=row[1], recorded_at=row[5])
    return state


class OrderFolder:
    """States by stream id, at most `capacity` of them (None: unbounded, for bulk rebuilds)."""

    def __init__(self, capacity: int | None = 200_000) -> None:
        self.capacity = capacity
        self.states: OrderedDict[str, Order] = OrderedDict()

    def __len__(self) -> int:
        return len(self.states)

    def clear(self) -> None:
        self.states.clear()

    def fold_page(self, rows: Sequence[Any]) -> set[str]:
        """Bulk mode: fold log rows straight into the cache, which must hold every order.

        Returns the stream ids touched. Only valid when the cache already holds every order the
        rows continue (a rebuild from the start), so no refold is ever needed.
        """
        states = self.states
        touched: set[str] = set()
        for row in rows:
            stream = row[STREAM]
            states[stream] = apply_one(
                states.get(stream),
                row[TYPE],
                row[SCHEMA],
                row[DATA],
                version=row[VERSION],
                recorded_at=row[RECORDED_AT],
            )
            touched.add(stream)
        return touched

    async def apply(
        self, conn: asyncpg.Connection, rows: Sequence[Any], skip: Collection[str] = ()
    ) -> tuple[dict[str, Order], list[Failure]]:
        """New states of every order touched by `rows` (log order), refolding cache misses.

        Orders in `skip` (quarantined) are left alone. An order whose event cannot be decoded
        or folded is returned as a `Failure` (the first event that failed) instead of a state:
        one bad event must not stop the fold of every other order in the batch.
        """
        first: dict[str, int] = {}
        for row in rows:
            if row[STREAM] not in skip:
                first.setdefault(row[STREAM], row[VERSION])
        current: dict[str, Order | None] = {}
        failed: dict[str, Failure] = {}
        missing: list[tuple[str, int]] = []
        for stream, version in first.items():
            cached = self.states.get(stream)
            if version == 1:
                current[stream] = None
            elif cached is not None and cached.version == version - 1:
                current[stream] = cached
            else:
                missing.append((stream, version))
        if missing:
            earlier = await conn.fetch(_EARLIER_SQL, [m[0] for m in missing], [m[1] for m in missing])
            for stream, _ in missing:
                current[stream] = None
            for row in earlier:
                stream = row[0]
                if stream in failed:
                    continue
                try:
                    current[stream] = apply_one(
                        current[stream], row[2], row[3], row[4], version=row[1], recorded_at=row[5]
                    )
                except Exception as exc:  # any fold error quarantines this order only
                    failed[stream] = Failure(stream, row[1], None, describe(exc))
        for row in rows:
            stream = row[STREAM]
            if stream in failed or stream not in first:
                continue
            try:
                current[stream] = apply_one(
                    current[stream],
                    row[TYPE],
                    row[SCHEMA],
                    row[DATA],
                    version=row[VERSION],
                    recorded_at=row[RECORDED_AT],
                )
            except Exception as exc:  # any fold error quarantines this order only
                failed[stream] = Failure(stream, row[VERSION], row[POS], describe(exc))
        states = {
            stream: state for stream, state in current.items() if state is not None and stream not in failed
        }
        return states, list(failed.values())

    def commit(self, states: dict[str, Order]) -> None:
        """Remember states whose rows committed; evict the least recently used beyond capacity."""
        cache = self.states
        for stream, state in states.items():
            cache[stream] = state
            cache.move_to_end(stream)
        if self.capacity is not None:
            while len(cache) > self.capacity:
                cache.popitem(last=False)

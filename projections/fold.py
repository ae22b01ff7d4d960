"""Per-order folded state kept in memory, so applying an event never refolds its whole stream.

The runner is the only writer of its version (advisory lock), so the states it folded are the
states behind its rows. They live in an LRU map; on a miss (first sight after a start, or an
evicted order) the order's earlier events are refolded from the store in one query for the
whole batch (`ledger.repository.fold_prefixes`; every event goes through the repository's one
fold step, `apply`). Within a stream `(tx, position)` order equals version order, so every event
older than one read through the fence is committed and readable.

An order whose events cannot be folded comes back as a `quarantine.Failure`, not an
exception (see `projections.quarantine`). `apply` returns new states without touching the cache: the caller commits them with `commit`
only after its database transaction committed, so a rolled-back batch never leaves the cache
ahead of the tables.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from ledger.domain.state import Order
from ledger.repository import apply, fold_prefixes
from projections.quarantine import Failure, describe

#: Raw log rows as `ledger.store.reads.RAW_COLUMNS` returns them.
POS, TX, STREAM, VERSION, EVENT_ID, TYPE, SCHEMA, DATA = range(8)
RECORDED_AT = 9


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
            states[stream] = apply(
                states.get(stream), row[TYPE], row[SCHEMA], row[DATA], row[VERSION], row[RECORDED_AT]
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
            earlier, broken = await fold_prefixes(conn, {stream: version - 1 for stream, version in missing})
            for stream, _ in missing:
                current[stream] = earlier.get(stream)
            for stream, failure in broken.items():  # any fold error quarantines this order only
                failed[stream] = Failure(stream, failure.version, None, describe(failure.error))
        for row in rows:
            stream = row[STREAM]
            if stream in failed or stream not in first:
                continue
            try:
                current[stream] = apply(
                    current[stream], row[TYPE], row[SCHEMA], row[DATA], row[VERSION], row[RECORDED_AT]
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

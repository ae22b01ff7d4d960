"""Event-carried state: the order view after each event, from an LRU cache of folded orders.

The relay publishes events in log order, and within a stream log order is version order, so
the state before event `v` is usually the cached state at `v - 1`: one `evolve` per event. On a
miss (a restart, or an order evicted from the cache) the stream is folded from the store up to
`v - 1`; all misses of a batch are loaded in one query, so a restart costs one round trip per
batch, not one per order.

A stream that cannot be folded (a domain bug; events were validated on append) is published
with `order: null` and logged loudly, rather than stopping the relay for every other order:
the relay never skips an event, and consumers park an order whose state they cannot read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg

from ledger.domain import EVENT_TYPES, Order, decode_event, evolve, order_to_json, upcast
from ledger.observability import get_logger
from ledger.relay.envelope import ENVELOPE_MONEY, order_id_of
from ledger.store.records import RecordedEvent

_log = get_logger(__name__)

_PREFIX_SQL = """
SELECT e.stream_id, e.version, e.type, e.schema_version, e.data, e.recorded_at
  FROM unnest($1::text[], $2::integer[]) AS w(stream_id, upto)
  JOIN events e ON e.stream_id = w.stream_id AND e.version <= w.upto
 ORDER BY e.stream_id, e.version
"""

View = Callable[[Order], Mapping[str, Any]]


class DomainAdapter:
    """The domain functions the relay needs: decode (with upcasting), evolve, and the order view."""

    def __init__(self, view: View | None = None) -> None:
        # Money as pre-serialized JSON numbers: this view only ever goes into an envelope.
        self.view: View = view or partial(order_to_json, money=ENVELOPE_MONEY)

    @staticmethod
    def upcast(type_: str, schema_version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Data in the current shape of its type, with that version (unknown types as stored)."""
        model = EVENT_TYPES.get(type_)
        current = int(getattr(model, "schema_version", schema_version))
        if model is None or current == schema_version:
            return schema_version, data
        return current, upcast(type_, schema_version, dict(data))

    @staticmethod
    def evolve(
        state: Order | None,
        type_: str,
        *,
        schema_version: int,
        data: dict[str, Any],
        version: int,
        at: datetime,
    ) -> Order:
        """Apply one stored event to a folded order (None before the first event)."""
        event = decode_event(type_, data, schema_version=schema_version)
        return evolve(state, event, version=version, recorded_at=at)


class OrderStates:
    """LRU of `stream_id -> (version, folded order)`; `views(batch)` gives the order after each event."""

    def __init__(self, pool: asyncpg.Pool, domain: DomainAdapter, capacity: int = 50_000) -> None:
        self._pool = pool
        self._domain = domain
        self._capacity = capacity
        self._cache: OrderedDict[str, tuple[int, Order]] = OrderedDict()
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    async def views(self, batch: Sequence[RecordedEvent]) -> list[Mapping[str, Any] | None]:
        """The order view after each event of `batch` (log order), None for non-order streams."""
        await self._load_misses(batch)
        return [self._advance(event) for event in batch]

    def _advance(self, event: RecordedEvent) -> Mapping[str, Any] | None:
        sid = event.stream_id
        if order_id_of(sid) is None:
            return None
        cached = self._cache.get(sid)
        before = None
        if event.version > 1:
            if cached is None or cached[0] != event.version - 1:
                # The prefix could not be folded (logged by `_load_misses`), or a version is
                # missing from the batch (never expected: within a stream log order = version order).
                self._cache.pop(sid, None)
                _log.error("relay.order_state_unavailable", stream_id=sid, version=event.version)
                return None
            before = cached[1]
        try:
            state = self._domain.evolve(
                before,
                event.type,
                schema_version=event.schema_version,
                data=event.data,
                version=event.version,
                at=event.recorded_at,
            )
            view = self._domain.view(state)
        except Exception as exc:  # a domain bug must not stop every other order
            self._cache.pop(sid, None)
            _log.error("relay.fold_failed", stream_id=sid, version=event.version, error=repr(exc))
            return None
        self._put(sid, event.version, state)
        return view

    def _put(self, sid: str, version: int, state: Order) -> None:
        self._cache[sid] = (version, state)
        self._cache.move_to_end(sid)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def _load_misses(self, batch: Sequence[RecordedEvent]) -> None:
        """Fold, in one query, every stream whose state before its first event in `batch` is not cached."""
        wanted: dict[str, int] = {}
        seen: set[str] = set()
        for event in batch:
            sid = event.stream_id
            if sid in seen:
                continue
            seen.add(sid)
            if event.version == 1 or order_id_of(sid) is None:
                continue
            cached = self._cache.get(sid)
            if cached is None or cached[0] != event.version - 1:
                wanted[sid] = event.version - 1
        if not wanted:
            return
        self.misses += len(wanted)
        rows = await self._pool.fetch(_PREFIX_SQL, list(wanted), list(wanted.values()))
        states: dict[str, tuple[int, Order]] = {}
        failed: set[str] = set()
        for row in rows:
            sid = row["stream_id"]
            if sid in failed:
                continue
            prev = states.get(sid)
            try:
                state = self._domain.evolve(
                    None if prev is None else prev[1],
                    row["type"],
                    schema_version=row["schema_version"],
                    data=row["data"],
                    version=row["version"],
                    at=row["recorded_at"],
                )
            except Exception as exc:  # see the module docstring
                failed.add(sid)
                states.pop(sid, None)
                _log.error("relay.fold_failed", stream_id=sid, version=row["version"], error=repr(exc))
                continue
            states[sid] = (row["version"], state)
        for sid, (version, state) in states.items():
            if version == wanted[sid]:
                self._put(sid, version, state)

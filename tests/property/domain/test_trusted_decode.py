"""The trusted decode of stored events folds exactly as full validation does, old versions included.

Every reader of the log folds through `ledger.repository` (`apply`, `fold_rows`, `fold_steps`,
and the same `DECODERS` inlined by the relay's fold cache and the projections' folds), which
trusts stored JSON of the current schema version to pydantic's Rust JSON validator and upcasts
older versions. The reference here is the generic full path: the data decoded to a dict,
upcast, and validated against its model by the store's `EventRegistry.decode`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.api.app import event_registry
from ledger.domain import Order, evolve, order_to_json
from ledger.domain.events import OrderEvent, event_data, schema_version_of
from ledger.relay.foldcache import DomainAdapter
from ledger.repository import fold_rows, fold_steps
from ledger.store.records import RecordedEvent
from projections.fold import OrderFolder
from projections.simulate import HistoryGenerator

REGISTRY = event_registry()
START = datetime(2026, 3, 1, tzinfo=UTC)


def _stored_shipment_v1(data: dict[str, Any]) -> dict[str, Any] | None:
    """ShipmentDispatched data as schema version 1 wrote it (one free-text `tracking`), when the
    v2 data has a v1 form (not both a code and a url)."""
    code, url = data["tracking_code"], data["tracking_url"]
    if code is not None and url is not None:
        return None
    old = {k: v for k, v in data.items() if k not in {"tracking_code", "tracking_url"}}
    old["tracking"] = url if url is not None else code
    return old


def _stored(event: OrderEvent, old: bool, form: str) -> tuple[int, Any]:
    """`(schema_version, data)` of a stored event: JSON text, bytes, or a decoded dict (jsonb)."""
    version, data = schema_version_of(event), event_data(event)
    if old and event.type == "ShipmentDispatched":
        v1 = _stored_shipment_v1(data)
        if v1 is not None:
            version, data = 1, v1
    if form == "text":
        return version, json.dumps(data)
    if form == "bytes":
        return version, json.dumps(data).encode()
    return version, data


def _fully_validated(rows: list[tuple[Any, ...]]) -> list[Order]:
    """The reference fold: every event decoded to a dict, upcast, and validated."""
    states: list[Order] = []
    state: Order | None = None
    for _, version, type_, schema_version, data, at in rows:
        obj = json.loads(data) if isinstance(data, str | bytes) else data
        event: Any = REGISTRY.decode(type_, schema_version, obj)
        state = evolve(state, event, version=version, recorded_at=at)
        states.append(state)
    return states


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    orders=st.integers(1, 6),
    max_events=st.integers(1, 14),
    old=st.lists(st.booleans(), min_size=1, max_size=32),
    forms=st.lists(st.sampled_from(["text", "bytes", "dict"]), min_size=1, max_size=32),
)
def test_every_readers_trusted_fold_equals_the_fully_validated_fold_of_random_histories(
    seed: int, orders: int, max_events: int, old: list[bool], forms: list[str]
) -> None:
    domain = DomainAdapter()
    i = 0
    for sid, events in HistoryGenerator(seed=seed).histories(orders, max_events):
        rows: list[tuple[Any, ...]] = []
        for version, event in enumerate(events, start=1):
            schema_version, data = _stored(event, old[i % len(old)], forms[i % len(forms)])
            rows.append((sid, version, event.type, schema_version, data, START + timedelta(seconds=version)))
            i += 1
        expected = _fully_validated(rows)

        # The repository: raw rows, and RecordedEvents (what `load` folds).
        assert fold_rows(rows) == expected[-1]
        recorded = [
            RecordedEvent(0, 0, sid, v, None, t, sv, d, {}, at, None, b"")  # type: ignore[arg-type]
            for sid, v, t, sv, d, at in rows
        ]
        assert [state for _, state in fold_steps(recorded)] == expected
        # The relay's fold step and the projections' bulk fold (log rows: position, tx first).
        relayed: Order | None = None
        for _, v, t, sv, d, at in rows:
            relayed = domain.evolve(relayed, t, schema_version=sv, data=d, version=v, at=at)
        assert relayed == expected[-1]
        folder = OrderFolder(capacity=None)
        folder.fold_page([(0, 0, sid, v, None, t, sv, d, {}, at) for sid, v, t, sv, d, at in rows])
        assert folder.states[sid] == expected[-1]
        # Equal orders, and the same view (types included: datetimes, UUIDs, decimals).
        assert json.dumps(order_to_json(expected[-1]), default=str) == json.dumps(
            order_to_json(folder.states[sid]), default=str
        )

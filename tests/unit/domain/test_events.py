"""Events: one discriminated union, a store codec without ``type`` in data, and old versions upcast."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from ledger.domain import (
    EVENT_TYPES,
    UPCASTERS,
    EventDecodeError,
    OrderEvent,
    ShipmentDispatched,
    decode_event,
    derive_transactions,
    event_data,
    fold,
    fulfillment_status,
    order_to_json,
    payment_status,
    schema_version_of,
)
from tests.unit.domain.helpers import every_event_type

FIXTURE = Path(__file__).parent / "fixtures" / "events_v1.json"


def stored_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(FIXTURE.read_text())
    return rows


def test_event_types_cover_the_union_and_have_past_tense_names() -> None:
    assert set(EVENT_TYPES) == {
        "OrderPlaced",
        "OrderDetailsChanged",
        "OrderLinesChanged",
        "OrderStatusChanged",
        "PaymentAuthorized",
        "PaymentCaptured",
        "PaymentRefunded",
        "PaymentVoided",
        "ShipmentDispatched",
        "ShipmentDelivered",
        "ItemsRestocked",
        "OrderCanceled",
        "OrderDeleted",
        "PersonalDataErased",
    }
    assert ShipmentDispatched.schema_version == 2


def test_frozen_old_version_events_upcast_and_fold_to_the_expected_order() -> None:
    rows = stored_rows()
    assert any(r["schema_version"] == 1 and r["type"] == "ShipmentDispatched" for r in rows)
    events = [
        (
            decode_event(r["type"], json.dumps(r["data"]), schema_version=r["schema_version"]),
            r["version"],
            datetime.fromisoformat(r["recorded_at"]),
        )
        for r in rows
    ]
    order = fold(events)
    assert [(s.tracking_code, s.tracking_url) for s in order.shipments] == [
        ("9400TRACK", None),
        (None, "https://ups.example/t/1Z999"),
    ]
    assert (payment_status(order), fulfillment_status(order)) == ("paid", "fulfilled")
    assert sum(t.total for t in derive_transactions(order)) == order.amounts.total == 3725
    assert order_to_json(order)["version"] == 5


def test_the_upcaster_is_a_pure_function_from_v1_dict_to_v2_dict() -> None:
    v1 = {
        "shipment_id": "S1",
        "lines": [],
        "tracking": "http://t.example/1",
        "dispatched_at": "2025-01-01T00:00:00Z",
    }
    v2 = UPCASTERS[("ShipmentDispatched", 1)](v1)
    assert v2["tracking_url"] == "http://t.example/1"
    assert v2["tracking_code"] is None
    assert "tracking" not in v2
    assert "tracking" in v1  # input untouched


def test_every_event_type_round_trips_through_the_store_codec() -> None:
    s = every_event_type()
    assert {e.type for e, _, _ in s.log} == set(EVENT_TYPES)
    for event, _, _ in s.log:
        data = event_data(event)
        assert "type" not in data
        assert decode_event(event.type, json.dumps(data).encode()) == event
        assert decode_event(event.type, data, schema_version=schema_version_of(event)) == event


def test_the_union_validates_by_discriminator() -> None:
    adapter: TypeAdapter[OrderEvent] = TypeAdapter(OrderEvent)
    event = adapter.validate_python({"type": "OrderStatusChanged", "status": "x"})
    assert event.type == "OrderStatusChanged"


@pytest.mark.parametrize(
    ("type_", "version", "match"),
    [
        ("Nope", None, "unknown event type"),
        ("ShipmentDispatched", 3, "newer"),
        ("OrderPlaced", 0, "no upcaster"),
    ],
)
def test_unreadable_stored_events_raise_a_decode_error(type_: str, version: int | None, match: str) -> None:
    with pytest.raises(EventDecodeError, match=match):
        decode_event(type_, "{}", schema_version=version)

"""The JSON view: the documented keys, money as exact Decimals, and an exact inverse."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from ledger.domain import Order, order_from_json, order_to_json
from tests.unit.domain.helpers import Stream, body, every_event_type
from tests.unit.domain.test_lifecycle import PLACE


def _dumps(view: dict[str, Any]) -> str:
    return json.dumps(view, default=lambda d: float(d) if isinstance(d, Decimal) else str(d))


def lived() -> Order:
    s = every_event_type()
    return s.order


def test_view_has_the_documented_keys_and_money_as_decimal_major_units() -> None:
    from ledger.domain import PlaceOrder, RecordPayment

    s = Stream()
    s.send(body(PlaceOrder, {**PLACE, "billing_address": {"country_code": "AUS", "city": "Sydney"}}))
    s.send(body(RecordPayment, {"kind": "captured", "amount": "40.00"}))
    view = order_to_json(s.order)
    for key in ("id", "external_id", "version", "status", "payment_status", "fulfillment_status", "currency"):
        assert key in view
    for key in ("total", "items", "shipments", "transactions", "created_at", "updated_at"):
        assert key in view
    assert view["total"] == Decimal("140.00")
    assert str(view["shipping"]) == "10.00"
    assert view["items"][0]["line_id"] == "L1"
    assert view["items"][0]["price_sell"] == Decimal("50.00")
    assert view["payments"]["captured"] == Decimal("40.00")
    assert view["payment_status"] == "partiallyPaid"
    assert view["billing_address"]["country_code"] == "AUS"


def test_the_view_writes_exactly_the_field_tables_keys_in_its_order() -> None:
    from ledger.domain import PlaceOrder
    from ledger.domain.views import VIEW_KEYS, VIEW_PARTS

    s = Stream()
    s.send(body(PlaceOrder, PLACE))
    assert tuple(order_to_json(s.order)) == VIEW_KEYS
    assert len(set(VIEW_KEYS)) == len(VIEW_KEYS) == sum(len(keys) for keys in VIEW_PARTS.values())


def test_order_from_json_inverts_order_to_json_exactly() -> None:
    order = lived()
    assert order_from_json(order_to_json(order)) == order


def test_order_from_json_is_exact_after_a_json_round_trip_with_decimals_or_floats() -> None:
    order = lived()
    text = _dumps(order_to_json(order))
    assert order_from_json(json.loads(text, parse_float=Decimal)) == order
    assert order_from_json(json.loads(text)) == order


def test_zero_decimal_currencies_are_whole_numbers_in_the_view() -> None:
    from ledger.domain import PlaceOrder

    s = Stream()
    s.send(
        body(PlaceOrder, {"currency": "JPY", "items": [{"name": "Tea", "quantity": 2, "price_sell": 1500}]})
    )
    view = order_to_json(s.order)
    assert str(view["total"]) == "3000"
    assert order_from_json(view) == s.order


def test_line_and_address_views_cover_every_model_field() -> None:
    """The view spells out LineItem's fields for speed: a new field must not be dropped silently."""
    from ledger.domain import Address, LineItem

    order = lived()
    view = order_to_json(order)
    for line, item in zip(order.lines, view["items"], strict=True):
        dumped = line.model_dump()
        dumped["product_variant_id"] = dumped.pop("variant_id")
        assert list(item) == [*dumped, "value"]
    assert list(Address.model_fields) == list(
        order_to_json(
            order._replace(details=order.details.model_copy(update={"billing_address": Address()}))
        )["billing_address"]
    )
    assert set(LineItem.model_fields) - {"variant_id"} <= set(view["items"][0])

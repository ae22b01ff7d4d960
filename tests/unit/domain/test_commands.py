"""Request bodies: the seed's Omneo bodies are accepted; hostile input is a validation error."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from ledger.domain import (
    DispatchShipment,
    PlaceOrder,
    RecordPayment,
    UpdateOrder,
)
from ledger_kernel.wire.codec import BodyError, parse_json
from tests.unit.domain.helpers import SEED_CREATE, SEED_UPDATE, body

ITEM = {"name": "Coat", "quantity": 1, "price_sell": "10.00"}


def test_seed_create_body_is_accepted_as_written() -> None:
    command = body(PlaceOrder, SEED_CREATE)
    assert command.total == Decimal("199.95")
    assert command.items[0].product_variant_id == 441200
    assert command.external_id == "CART-88123"


def test_seed_update_body_is_accepted_as_written() -> None:
    command = body(UpdateOrder, SEED_UPDATE)
    assert (command.status, command.total) == ("processing", Decimal("249.90"))
    assert command.model_fields_set == {"status", "total"}


def test_parse_json_keeps_decimals_exact() -> None:
    assert parse_json('{"x": 100.0000000000000001}')["x"] == Decimal("100.0000000000000001")


@pytest.mark.parametrize(
    "raw",
    ['{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}', '{"a": 1, "a": 2}', "[" * 100_000, "{", b"\xff"],
)
def test_parse_json_refuses_non_json_numbers_duplicate_keys_and_deep_nesting(raw: str | bytes) -> None:
    with pytest.raises(BodyError):
        parse_json(raw)


def place(**changes: Any) -> dict[str, Any]:
    return {"items": [ITEM], **changes}


def item(**changes: Any) -> dict[str, Any]:
    return place(items=[{**ITEM, **changes}])


BAD_PLACE_BODIES = {
    "negative quantity": item(quantity=-1),
    "zero quantity": item(quantity=0),
    "fractional quantity": item(quantity=1.5),
    "integral float quantity": item(quantity=2.0),
    "string quantity": item(quantity="2"),
    "bool quantity": item(quantity=True),
    "huge quantity": item(quantity=2**63),
    "NaN price": item(price_sell="NaN"),
    "infinite price": item(price_sell="Infinity"),
    "1e309 price": item(price_sell=Decimal("1e309")),
    "bool price": item(price_sell=True),
    "negative price": item(price_sell="-1.00"),
    "no price": {"items": [{"name": "Coat", "quantity": 1}]},
    "unknown field": place(version=3),
    "unknown item field": item(colour="red"),
    "NUL in name": item(name="Co\u0000at"),
    "lone surrogate": item(name="Co\ud800at"),
    "bidi override": item(name="\u202eCoat"),
    "control character": place(note="a\u0007b"),
    "empty name": item(name=""),
    "too long name": item(name="x" * 256),
    "unknown currency": place(currency="ABC"),
    "metal currency": place(currency="XAU"),
    "int as external id": place(external_id=123),
    "object as status": place(status={"a": 1}),
    "no items": place(items=[]),
    "javascript url": item(image_url="javascript:alert(1)"),
    "bad email": place(email="not-an-email"),
    "naive placed_at": place(placed_at="2025-01-01T00:00:00"),
    "bad country code": place(billing_address={"country_code": "U5A"}),
    "bad discount type": place(discount_type="bogo"),
    "string tax flag": place(tax_included="yes"),
}


@pytest.mark.parametrize("data", BAD_PLACE_BODIES.values(), ids=BAD_PLACE_BODIES.keys())
def test_hostile_or_malformed_place_bodies_are_validation_errors(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        PlaceOrder.model_validate(data)
    assert info.value.errors()[0]["msg"]


def test_a_lone_surrogate_escape_in_raw_json_is_refused() -> None:
    raw = '{"items": [{"name": "\\ud800", "quantity": 1, "price_sell": 1}]}'
    with pytest.raises(BodyError, match="surrogate"):  # by the codec, before any model
        parse_json(raw)
    with pytest.raises(ValidationError, match=r"unicode|surrogate"):  # and by the model itself
        PlaceOrder.model_validate(json.loads(raw))


def test_the_line_count_is_bounded_by_a_parameter() -> None:
    data = place(items=[ITEM] * 3)
    assert len(body(PlaceOrder, data, max_lines=3).items) == 3
    with pytest.raises(ValidationError, match="at most 2 lines"):
        body(PlaceOrder, data, max_lines=2)
    with pytest.raises(ValidationError, match="at most 500 lines"):
        body(PlaceOrder, place(items=[ITEM] * 501))


def test_update_refuses_null_for_money_status_and_items_but_clears_details() -> None:
    with pytest.raises(ValidationError, match="total cannot be null"):
        body(UpdateOrder, {"total": None})
    assert body(UpdateOrder, {"note": None}).model_fields_set == {"note"}


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "stolen", "amount": "1.00"},
        {"kind": "captured", "amount": "0"},
        {"kind": "captured", "amount": "-1.00"},
        {"kind": "captured", "amount": 1e309},
        {"kind": "captured"},
    ],
)
def test_bad_payment_bodies_are_validation_errors(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RecordPayment.model_validate(data)


@pytest.mark.parametrize(
    "lines",
    [
        [],
        [{"quantity": 1}],
        [{"line_id": "L1", "sku": "A", "quantity": 1}],
        [{"line_id": "L1", "quantity": 0}],
    ],
)
def test_shipment_lines_need_one_key_and_a_positive_quantity(lines: list[dict[str, Any]]) -> None:
    with pytest.raises(ValidationError):
        DispatchShipment.model_validate({"lines": lines})


def test_currency_codes_are_normalised_to_upper_case_and_country_codes_kept_as_given() -> None:
    command = body(PlaceOrder, place(currency="usd", shipping_address={"country_code": "usa"}))
    assert command.currency == "USD"
    assert command.shipping_address is not None
    assert command.shipping_address.country_code == "USA"


def test_json_round_trip_of_a_float_body_keeps_two_decimals() -> None:
    command = PlaceOrder.model_validate(json.loads(SEED_CREATE))  # floats, as orjson would give
    assert command.items[0].price_sell == Decimal("199.95")

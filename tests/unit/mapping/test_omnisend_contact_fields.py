"""Omnisend contact fields the vendor only uses in one form: E.164 phones, short names, countryCode format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumers.http import encode_json
from consumers.omnisend.mapping import OmnisendOptions, OmnisendState, map_event, map_order
from consumers.omnisend.phones import normalise_phone
from consumers.sandbox.omnisend_rules import OmnisendRules
from tests.unit.mapping.story import OrderStory, parse

STORY_CATEGORIES = frozenset({"cat-a", "cat-b"})
"""Categories every story line names, as if Omnisend had them already (their calls come first)."""

EVENTS = OmnisendOptions(mode="events")


def _wire(body: dict[str, Any]) -> Any:
    """The body as the vendor receives it (Decimals become JSON numbers)."""
    return json.loads(encode_json(body))


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("(512) 555-0147", "US", "+15125550147"),
        ("(512) 555-0147", "USA", "+15125550147"),  # alpha-3 addresses give the region too
        ("0412 345 678", "AU", "+61412345678"),
        ("+61 412 345 678", None, "+61412345678"),  # a +prefix needs no region
        ("+44 20 7946 0958", "US", "+442079460958"),  # the prefix wins over the address
    ],
)
def test_phones_become_e164_with_the_region_of_the_address(
    raw: str, country: str | None, expected: str
) -> None:
    phone = normalise_phone(raw, country)
    assert (phone.e164, phone.dropped) == (expected, False)


@pytest.mark.parametrize(("raw", "country"), [("12", "US"), ("call me", "US"), ("0412 345 678", None)])
def test_a_phone_that_cannot_be_normalised_is_dropped(raw: str, country: str | None) -> None:
    phone = normalise_phone(raw, country)
    assert (phone.e164, phone.dropped) == (None, True)


def test_no_phone_is_not_a_drop() -> None:
    assert normalise_phone(None, "US").dropped is False
    assert normalise_phone("  ", "US").dropped is False


def test_v3_order_phones_are_e164_and_unusable_ones_are_left_out_and_named() -> None:
    story = OrderStory()
    env = story.place(
        phone="0412 345 678",
        billing_address={"country_code": "AU", "phone": "not a phone", "city": "Melbourne"},
        shipping_address={"country_code": "AUS", "phone": "(03) 9123 4567", "city": "Melbourne"},
    )[0]
    mapped = map_order(parse(env).order)
    assert mapped.body["phone"] == "+61412345678"
    assert "phone" not in mapped.body["billingAddress"]
    assert mapped.body["shippingAddress"]["phone"] == "+61391234567"
    assert mapped.dropped == ("billingAddress.phone",)
    call = map_event(parse(env), OmnisendState(categories=STORY_CATEGORIES))[0]
    assert call.dropped == ("billingAddress.phone",)


def test_countrycode_follows_the_configured_format_and_passes_that_format_s_rules() -> None:
    story = OrderStory()
    order = parse(story.place(shipping_address={"country_code": "DEU", "city": "Berlin"})[0]).order
    for fmt, expected in (("alpha3", "DEU"), ("alpha2", "DE")):
        body = map_order(order, OmnisendOptions(country_format=fmt)).body  # type: ignore[arg-type]
        assert body["shippingAddress"]["countryCode"] == expected
        assert OmnisendRules(country_code_format=fmt).create(body) == []  # type: ignore[arg-type]


def test_events_contact_names_over_50_are_cut_and_noted_not_refused() -> None:
    story = OrderStory()
    long_name = "Maximiliana " * 6  # 72 characters
    env = story.place(first_name=long_name.strip(), last_name="Ng", phone="(512) 555-0147")[0]
    call = map_event(parse(env), OmnisendState(categories=STORY_CATEGORIES), EVENTS)[0]
    assert call.body is not None
    contact = call.body["contact"]
    assert len(contact["firstName"]) <= 50
    assert long_name.startswith(contact["firstName"])
    assert contact["lastName"] == "Ng"
    assert contact["phone"] == "+15125550147"
    assert any("firstName" in note for note in call.notes)
    assert OmnisendRules().event(_wire(call.body)) == []


def test_events_contact_phone_longer_than_15_characters_is_left_out() -> None:
    story = OrderStory()
    env = story.place(phone="+49 30 123456789012")[0]  # valid German number, 17 characters in E.164
    assert normalise_phone("+49 30 123456789012", None).e164 == "+4930123456789012"
    call = map_event(parse(env), OmnisendState(categories=STORY_CATEGORIES), EVENTS)[0]
    assert call.body is not None
    assert "phone" not in call.body["contact"]
    assert call.dropped == ("contact.phone",)
    assert OmnisendRules().event(_wire(call.body)) == []
    v3 = map_event(parse(env), OmnisendState(categories=STORY_CATEGORIES))[0]  # v3 orders have no such cap
    assert v3.body is not None
    assert v3.body["phone"] == "+4930123456789012"

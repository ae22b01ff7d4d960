"""Omnisend mapping: pure functions of the envelope (no I/O)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from consumers.fanout.countries import convert_country
from consumers.http import encode_json
from consumers.omnisend.mapping import (
    OmnisendOptions,
    OmnisendState,
    cents,
    map_batch,
    map_event,
    order_body,
)
from consumers.sandbox.omnisend_rules import OmnisendRules
from tests.unit.mapping.story import OrderStory, parse

STORY_CATEGORIES = frozenset({"cat-a", "cat-b"})
"""Categories every story line names, as if Omnisend had them already (their calls come first)."""

RULES = OmnisendRules(max_products=500, country_code_format="alpha3")


def _after(story: OrderStory) -> OmnisendState:
    """State as if everything so far had been delivered."""
    sent: dict[str, str] = {}
    exists = False
    for env in story.envelopes:
        for call in map_event(parse(env), OmnisendState(exists, sent, STORY_CATEGORIES)):
            sent.update(call.remember)
            exists = True
    return OmnisendState(exists, sent, STORY_CATEGORIES)


@pytest.mark.parametrize(
    ("minor", "currency", "expected", "rounded"),
    [
        (1995, "USD", 1995, False),
        (0, "USD", 0, False),
        (1000, "JPY", 100000, False),  # 0-decimal: 1000 yen = 100000 hundredths
        (1234, "KWD", 123, True),  # 3-decimal: 1.234 KWD -> 123.4 cents, half-even
        (1235, "KWD", 124, True),
        (1250, "KWD", 125, False),
        (1225, "BHD", 122, True),  # 122.5 -> 122 (half to even)
    ],
)
def test_cents_conversion(minor: int, currency: str, expected: int, rounded: bool) -> None:
    assert cents(minor, currency) == (expected, rounded)


def test_create_body_is_valid_v3_with_cents_statuses_and_alpha3() -> None:
    story = OrderStory()
    calls = map_event(
        parse(story.place(price="19.95", categories=("cat-a", "cat-b"))[0]),
        OmnisendState(categories=STORY_CATEGORIES),
    )
    assert [c.kind for c in calls] == ["omnisend.order.create"]
    body = calls[0].body
    assert body is not None
    assert RULES.create(body) == []
    assert body["orderSum"] == 3990
    assert body["products"][0]["price"] == 1995
    assert body["products"][0]["categoryIDs"] == ["cat-a", "cat-b"]
    assert body["paymentStatus"] == "awaitingPayment"
    assert body["fulfillmentStatus"] == "unfulfilled"
    assert body["shippingAddress"]["countryCode"] == "USA"
    assert body["orderNumber"] == "1001", "the seed's string by default"
    assert calls[0].key == story.order_id


def test_order_number_type_setting_sends_the_seed_s_string_or_the_spec_s_integer() -> None:
    order = parse(OrderStory().place(external_id="#1001-B")[0]).order
    as_string, _ = order_body(order, OmnisendOptions(order_number="string"))
    as_integer, _ = order_body(order, OmnisendOptions(order_number="integer"))
    assert as_string["orderNumber"] == "#1001-B"
    assert as_integer["orderNumber"] == 1001
    assert OmnisendRules(order_number_type="string").create(as_string) == []
    assert OmnisendRules(order_number_type="integer").create(as_integer) == []
    assert [e.path for e in OmnisendRules(order_number_type="integer").create(as_string)] == ["orderNumber"]
    assert [e.path for e in OmnisendRules(order_number_type="string").create(as_integer)] == ["orderNumber"]


def test_alpha2_setting_and_country_conversion() -> None:
    story = OrderStory()
    order = parse(story.place()[0]).order
    body, _ = order_body(order, OmnisendOptions(country_format="alpha2"))
    assert body["shippingAddress"]["countryCode"] == "US"
    assert convert_country("deu", "alpha2") == "DE"
    assert convert_country("XX", "alpha3") is None


def test_jpy_order_in_cents() -> None:
    story = OrderStory()
    body = map_event(
        parse(story.place(currency="JPY", price="1500")[0]), OmnisendState(categories=STORY_CATEGORIES)
    )[0].body
    assert body is not None
    assert body["orderSum"] == 300000
    assert RULES.create(body) == []


def test_kwd_rounding_is_noted() -> None:
    story = OrderStory()
    call = map_event(
        parse(story.place(currency="KWD", price="1.234")[0]), OmnisendState(categories=STORY_CATEGORIES)
    )[0]
    assert call.body is not None
    assert call.body["products"][0]["price"] == 123
    assert any("rounded to cents" in n for n in call.notes)


def test_status_changes_are_patches_and_follow_the_enums() -> None:
    story = OrderStory()
    story.place()
    state = _after(story)
    patch = map_event(parse(story.pay("20.00")[0]), state)
    assert [c.method for c in patch] == ["PATCH"]
    assert patch[0].body == {"paymentStatus": "paid", "fulfillmentStatus": "unfulfilled"}
    assert RULES.patch(patch[0].body) == []
    state = _after(story)
    ship = map_event(parse(story.ship("S1", "L1")[0]), state)[0]
    assert ship.body is not None
    assert ship.body["fulfillmentStatus"] == "inProgress"
    assert ship.body["trackingCode"] == "TRK-S1"
    assert ship.body["courierUrl"] == "https://track.example.com/S1"


def test_line_change_is_a_full_put() -> None:
    story = OrderStory()
    story.place()
    state = _after(story)
    env = parse(
        story.update(
            items=[{"line_id": "L1", "name": "Item 1", "quantity": 3, "price_sell": Decimal("10.00")}],
            total=Decimal("30.00"),
            subtotal=Decimal("30.00"),
        )[0]
    )
    calls = map_event(env, state)
    assert [c.method for c in calls] == ["PUT"]
    assert calls[0].body is not None
    assert calls[0].body["orderSum"] == 3000
    assert RULES.replace(calls[0].body) == []


def test_cancel_sends_canceled_date_and_reason() -> None:
    story = OrderStory()
    story.place()
    state = _after(story)
    call = map_event(parse(story.cancel("out of stock")[0]), state)[0]
    assert call.method == "PATCH"
    assert call.body is not None
    assert call.body["cancelReason"] == "out of stock"
    assert call.body["canceledDate"].endswith("Z")
    assert RULES.patch(call.body) == []


def test_redelivered_or_no_op_event_sends_nothing() -> None:
    story = OrderStory()
    env = parse(story.place()[0])
    state = _after(story)
    assert map_event(env, state) == []


def test_delete_only_when_it_exists() -> None:
    story = OrderStory()
    story.place()
    state = _after(story)
    env = parse(story.delete()[0])
    assert [c.method for c in map_event(env, state)] == ["DELETE"]
    assert map_event(env, OmnisendState(categories=STORY_CATEGORIES)) == []


def test_coalesced_batch_is_one_call_with_the_latest_state() -> None:
    story = OrderStory()
    story.place()
    state = _after(story)
    envs = [parse(e) for e in story.pay("20.00") + story.ship("S1", "L1") + story.ship("S2", "L2")]
    calls = map_batch(envs, state)
    assert len(calls) == 1
    assert calls[0].method == "PATCH"
    assert calls[0].body is not None
    assert calls[0].body["fulfillmentStatus"] == "fulfilled"
    fresh = map_batch([parse(e) for e in story.envelopes], OmnisendState(categories=STORY_CATEGORIES))
    assert [c.method for c in fresh] == ["POST"]


@pytest.mark.parametrize(("lines", "sent"), [(499, 499), (500, 500), (501, 500), (1200, 500)])
def test_products_capped_at_500_deterministically(lines: int, sent: int) -> None:
    story = OrderStory()
    env = parse(story.place(lines=lines, price="1.00")[0])
    call = map_event(env, OmnisendState(categories=STORY_CATEGORIES))[0]
    again = map_event(env, OmnisendState(categories=STORY_CATEGORIES))[0]
    assert call == again
    assert call.body is not None
    products = call.body["products"]
    assert len(products) == sent
    assert [p["productID"] for p in products] == [f"P{i + 1}" for i in range(sent)]
    assert call.body["orderSum"] == lines * 100, "order sums unchanged by the cap"
    assert bool(call.notes) == (lines > 500)
    assert RULES.create(call.body) == []


def test_events_mode_uses_recommended_events_with_deterministic_ids() -> None:
    options = OmnisendOptions(mode="events")
    story = OrderStory()
    placed = map_event(parse(story.place()[0]), OmnisendState(categories=STORY_CATEGORIES), options)
    assert [c.body["eventName"] for c in placed if c.body] == ["placed order"]
    body = placed[0].body
    assert body is not None
    assert RULES.event(json.loads(encode_json(body))) == [], "valid as sent on the wire"
    assert body["properties"]["totalPrice"] == Decimal("20.00")
    assert placed == map_event(parse(story.envelopes[0]), OmnisendState(categories=STORY_CATEGORIES), options)
    sent = dict(placed[0].remember)
    paid = map_event(parse(story.pay("20.00")[0]), OmnisendState(True, sent, STORY_CATEGORIES), options)
    assert [c.body["eventName"] for c in paid if c.body] == ["paid for order"]
    assert (
        map_event(
            parse(story.update(status="processing")[0]), OmnisendState(True, sent, STORY_CATEGORIES), options
        )
        == []
    )

"""Which orders a destination cannot take (not applicable, not parked): the pure decision."""

from __future__ import annotations

import json

from consumers.fanout.delivery_store import DeliveryRow
from consumers.fanout.destinations import OmneoDestination, OmnisendDestination
from consumers.http import encode_json
from consumers.omneo import mapping as omneo_mapping
from consumers.omnisend import mapping as omnisend_mapping
from consumers.omnisend.mapping import NO_CONTACT, OmnisendOptions, OmnisendState, map_batch
from consumers.sandbox.omnisend_rules import OmnisendRules
from tests.unit.mapping.story import OrderStory, parse

RULES = OmnisendRules(max_products=500, country_code_format="alpha3")


def _anonymous() -> OrderStory:
    story = OrderStory()
    story.place(email=None, phone=None)
    return story


def test_order_without_email_or_phone_is_not_applicable_to_omnisend() -> None:
    story = _anonymous()
    order = parse(story.envelopes[-1]).order
    refused = omnisend_mapping.not_applicable(order)
    assert refused == NO_CONTACT
    assert refused.code == "no_contact"
    assert "email" in refused.reason
    assert "phone" in refused.reason


def test_the_omnisend_sandbox_indeed_refuses_that_order() -> None:
    """The rule mirrors the vendor's: the body we would send fails the create validation."""
    story = _anonymous()
    (call,) = map_batch([parse(story.envelopes[-1])], OmnisendState())
    assert any(e.path == "email" and e.keyword == "required" for e in RULES.create(call.body))


def test_email_or_phone_alone_makes_the_order_applicable() -> None:
    with_email = OrderStory()
    with_email.place(phone=None)
    with_phone = OrderStory()
    with_phone.place(email=None, phone="+61400000000")
    for story in (with_email, with_phone):
        assert omnisend_mapping.not_applicable(parse(story.envelopes[-1]).order) is None


def test_omneo_takes_orders_without_any_contact() -> None:
    story = _anonymous()
    story.update(profile_id=None)
    assert omneo_mapping.not_applicable(parse(story.envelopes[-1]).order) is None


def test_omnisend_rule_applies_only_while_omnisend_holds_nothing_of_the_order() -> None:
    story = _anonymous()
    envs = [parse(e) for e in story.envelopes]
    destination = OmnisendDestination(None, OmnisendOptions())  # type: ignore[arg-type]
    assert destination.not_applicable(envs, DeliveryRow("omnisend", story.order_id)) == NO_CONTACT
    held = DeliveryRow("omnisend", story.order_id, remote_id=story.order_id, remote_exists=True)
    assert destination.not_applicable(envs, held) is None
    omneo = OmneoDestination(None)  # type: ignore[arg-type]
    assert omneo.not_applicable(envs, DeliveryRow("omneo", story.order_id)) is None


def test_deleted_order_is_left_to_the_mapping() -> None:
    story = _anonymous()
    story.delete()
    assert omnisend_mapping.not_applicable(parse(story.envelopes[-1]).order) is None


def test_events_mode_catch_up_sends_placed_order_with_the_current_state() -> None:
    story = _anonymous()
    story.update(email="late@example.com")
    late = [parse(story.envelopes[-1])]
    options = OmnisendOptions(mode="events")
    assert map_batch(late, OmnisendState(), options) == [], "an update alone means nothing to Omnisend"
    (call,) = map_batch(late, OmnisendState(), options, catch_up=True)
    assert call.body is not None
    assert call.body["eventName"] == "placed order"
    assert call.body["contact"]["email"] == "late@example.com"
    assert RULES.event(json.loads(encode_json(call.body))) == [], "valid as sent on the wire"
    already = OmnisendState(False, {"ev:placed order": "x"})
    assert map_batch(late, already, options, catch_up=True) == [], "never a second placed order"

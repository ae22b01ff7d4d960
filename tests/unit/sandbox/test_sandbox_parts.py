"""Sandbox building blocks without HTTP: limiter, faults, redaction and request validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from consumers.sandbox import omneo_rules
from consumers.sandbox.core import FaultSet, FaultSpecError, ManualClock, SlidingWindowLimiter, redact_headers
from consumers.sandbox.omnisend_rules import OmnisendRules, load_spec


def test_sliding_window_rejects_until_the_oldest_request_leaves_the_window() -> None:
    clock = ManualClock()
    limiter = SlidingWindowLimiter(3, 60, clock)
    assert [limiter.acquire().allowed for _ in range(3)] == [True, True, True]
    clock.advance(30)
    blocked = limiter.acquire()
    assert (blocked.allowed, blocked.remaining, blocked.reset_s) == (False, 0, 30)
    clock.advance(29.999)
    assert not limiter.acquire().allowed
    clock.advance(0.001)
    assert limiter.acquire().allowed


def test_counted_faults_fire_exactly_count_times() -> None:
    faults = FaultSet(ManualClock())
    faults.add({"status": 503, "count": 2, "paths": "/v3/*"})
    assert faults.match("GET", "/api/v3/orders", set()) is None
    hits = [faults.match("POST", "/v3/orders", set()) for _ in range(3)]
    assert [h is not None for h in hits] == [True, True, False]


def test_timed_faults_expire_on_the_injected_clock() -> None:
    clock = ManualClock()
    faults = FaultSet(clock)
    faults.add({"status": 500, "for_seconds": 10})
    assert faults.match("GET", "/x", set()) is not None
    clock.advance(10)
    assert faults.match("GET", "/x", set()) is None


def test_order_rejection_applies_to_that_order_only() -> None:
    faults = FaultSet(ManualClock())
    fault = faults.add({"reject_order": "o-7"})
    assert (fault.kind, fault.status) == ("reject_order", 422)
    assert faults.match("POST", "/v3/orders", {"o-1"}) is None
    assert faults.match("POST", "/v3/orders", {"o-7"}) is not None


@pytest.mark.parametrize("spec", [{}, {"status": "abc"}, {"status": 999}, {"count": 1}])
def test_unreadable_fault_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(FaultSpecError):
        FaultSet(ManualClock()).add(spec)


def test_credentials_are_redacted_from_logged_headers() -> None:
    out = redact_headers({"Authorization": "Bearer s3cret", "X-API-KEY": "k", "X-Token": "t", "Accept": "a"})
    assert out == {
        "authorization": "[REDACTED]",
        "x-api-key": "[REDACTED]",
        "x-token": "[REDACTED]",
        "accept": "a",
    }


@pytest.fixture(scope="module")
def rules() -> OmnisendRules:
    """Rules for alpha-2 countryCode and an integer orderNumber, as the vendor's own example order has."""
    return OmnisendRules(max_products=500, country_code_format="alpha2", order_number_type="integer")


def _spec_example() -> dict[str, Any]:
    example = load_spec()["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return copy.deepcopy(example["example"])


def test_the_vendors_own_example_order_is_valid(rules: OmnisendRules) -> None:
    assert rules.create(_spec_example()) == []


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [("alpha3", "USA", ["US", "USAX", "XYZ"]), ("alpha2", "US", ["USA", "XY", "U"])],
)
def test_country_code_is_checked_in_the_configured_format(fmt: str, good: str, bad: list[str]) -> None:
    rules = OmnisendRules(
        country_code_format="alpha3" if fmt == "alpha3" else "alpha2", order_number_type="integer"
    )
    order = _spec_example()
    order["shippingAddress"]["countryCode"] = good
    order["billingAddress"]["countryCode"] = good
    assert rules.create(order) == []
    for code in bad:
        order["billingAddress"]["countryCode"] = code
        assert [e.path for e in rules.create(order)] == ["billingAddress.countryCode"], code


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"orderSum": 666.66}, "orderSum"),
        ({"paymentStatus": "PAID"}, "paymentStatus"),
        ({"fulfillmentStatus": "shipped"}, "fulfillmentStatus"),
        ({"createdAt": "2017-06-20 16:40:12"}, "createdAt"),
        ({"currency": "usd"}, "currency"),
        ({"orderNumber": "#1001"}, "orderNumber"),
        ({"discountType": "bogus"}, "discountType"),
        ({"courierUrl": "not a url"}, "courierUrl"),
    ],
)
def test_representative_bad_order_fields_are_named(
    seeded: OmnisendRules, change: dict[str, Any], path: str
) -> None:
    assert [e.path for e in seeded.create({**_spec_example(), **change})] == [path]


@pytest.fixture(scope="module")
def seeded() -> OmnisendRules:
    """The seed's own rules switched on (status enums, discountType, 500 products, currency case)."""
    return OmnisendRules(
        max_products=500, country_code_format="alpha2", order_number_type="integer", seed_rules=True
    )


@pytest.mark.parametrize(
    "change",
    [
        {"paymentStatus": "PAID"},
        {"fulfillmentStatus": "shipped"},
        {"currency": "usd"},
        {"discountType": "bogus"},
        {"someFieldOmnisendAddsLater": 1},
    ],
)
def test_the_published_spec_alone_does_not_refuse_what_only_the_seed_rules(
    rules: OmnisendRules, change: dict[str, Any]
) -> None:
    assert rules.create({**_spec_example(), **change}) == []


def test_more_than_500_products_are_refused_by_the_seed_rules_only(
    rules: OmnisendRules, seeded: OmnisendRules
) -> None:
    order = _spec_example()
    order["products"] = [order["products"][0]] * 501
    assert rules.create(order) == []
    assert [e.keyword for e in seeded.create(order)] == ["maxItems"]


def test_more_than_500_products_are_refused(seeded: OmnisendRules) -> None:
    rules = seeded
    order = _spec_example()
    product = order["products"][0]
    order["products"] = [product] * 500
    assert rules.create(order) == []
    order["products"] = [product] * 501
    assert [e.keyword for e in rules.create(order)] == ["maxItems"]


def test_patch_checks_its_documented_fields_and_lets_others_through(rules: OmnisendRules) -> None:
    assert (
        rules.patch(
            {"paymentStatus": "refunded", "trackingCode": "1Z", "canceledDate": "2024-01-01T00:00:00Z"}
        )
        == []
    )
    assert rules.patch({"orderSum": 1, "paymentStatus": "paid"}) == []
    assert [e.path for e in rules.patch({"canceledDate": "yesterday"})] == ["canceledDate"]


def test_omneo_transactions_need_wall_clock_time_and_a_real_timezone() -> None:
    body = {
        "total": 10,
        "transacted_at": "2025-06-15T14:32:00Z",
        "timezone": "Mars/Olympus",
        "items": [{"name": "x", "quantity": 1.5, "price_current": 1, "price_sell": "1.00"}],
        "is_void": None,
    }
    errors = omneo_rules.validate(
        body, omneo_rules.TRANSACTION_FIELDS, ("total", "transacted_at", "timezone", "items")
    )
    assert errors == {
        "transacted_at": ["The transacted at does not match the format Y-m-d H:i:s."],
        "timezone": ["The timezone must be a valid timezone."],
        "is_void": ["The is void field must be true or false."],
        "items.0.quantity": ["The items.0.quantity must be an integer."],
    }


def test_omneo_partial_updates_check_only_supplied_fields() -> None:
    assert (
        omneo_rules.validate({"status": "processing"}, omneo_rules.ORDER_FIELDS, ("total",), partial=True)
        == {}
    )

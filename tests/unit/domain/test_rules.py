"""Every domain rule refuses what breaks it, with a machine code and a reason naming the numbers."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.domain import (
    CancelOrder,
    DeleteOrder,
    DispatchShipment,
    DomainError,
    MarkDelivered,
    PlaceOrder,
    RecordPayment,
    RestockItems,
    UpdateOrder,
)
from tests.unit.domain.helpers import Stream, body

ITEMS = [
    {"name": "Coat", "sku": "A", "quantity": 2, "price_sell": "50.00"},
    {"name": "Scarf", "sku": "B", "quantity": 1, "price_sell": "30.00"},
]


def placed(**extra: Any) -> Stream:
    s = Stream()
    s.send(body(PlaceOrder, {"currency": "AUD", "items": ITEMS, **extra}))
    return s


def refused(s: Stream, command: Any) -> DomainError:
    version = s.order.version if s.state else 0
    with pytest.raises(DomainError) as info:
        s.send(command)
    assert (s.order.version if s.state else 0) == version  # nothing appended
    return info.value


def pay(kind: str, amount: str, **extra: Any) -> RecordPayment:
    return body(RecordPayment, {"kind": kind, "amount": amount, **extra})


def ship(lines: list[dict[str, Any]], **extra: Any) -> DispatchShipment:
    return body(DispatchShipment, {"lines": lines, **extra})


def test_placing_an_existing_order_is_a_conflict() -> None:
    s = placed()
    err = refused(s, body(PlaceOrder, {"items": ITEMS}))
    assert (err.code, err.kind) == ("order_exists", "conflict")


def test_commands_on_a_missing_order_are_not_found() -> None:
    err = refused(Stream(), pay("captured", "1.00"))
    assert (err.code, err.kind) == ("order_not_found", "not_found")


@pytest.mark.parametrize(
    "command",
    [
        body(UpdateOrder, {"note": "x"}),
        body(RecordPayment, {"kind": "refunded", "amount": "1.00"}),
        body(CancelOrder, {}),
        body(DeleteOrder, {}),
        body(RestockItems, {"lines": [{"sku": "A", "quantity": 1}]}),
    ],
)
def test_nothing_changes_a_deleted_order(command: Any) -> None:
    s = placed()
    s.send(pay("captured", "130.00"))
    s.send(body(DeleteOrder, {"reason": "test order"}))
    assert s.order.deleted
    err = refused(s, command)
    assert (err.code, err.kind) == ("order_deleted", "gone")


@pytest.mark.parametrize(
    "command",
    [
        body(UpdateOrder, {"status": "processing"}),
        body(RecordPayment, {"kind": "captured", "amount": "1.00"}),
        body(RecordPayment, {"kind": "authorized", "amount": "1.00"}),
        body(DispatchShipment, {"lines": [{"sku": "A", "quantity": 1}]}),
    ],
)
def test_a_canceled_order_refuses_everything_but_refunds_voids_restocks_and_deliveries(command: Any) -> None:
    s = placed()
    s.send(body(CancelOrder, {"reason": "oos"}))
    assert refused(s, command).code == "order_canceled"


def test_a_canceled_order_can_still_be_refunded() -> None:
    s = placed()
    s.send(pay("captured", "130.00"))
    s.send(body(CancelOrder, {}))
    assert [e.type for e in s.send(pay("refunded", "130.00"))] == ["PaymentRefunded"]


@pytest.mark.parametrize(
    ("command", "loc"),
    [
        (
            body(PlaceOrder, {"currency": "USD", "items": [{**ITEMS[0], "currency": "EUR"}]}),
            ("items", 0, "currency"),
        ),
        (body(RecordPayment, {"kind": "captured", "amount": "1.00", "currency": "EUR"}), ("currency",)),
        (body(UpdateOrder, {"currency": "EUR", "note": "x"}), ("currency",)),
    ],
)
def test_mixed_currencies_are_refused(command: Any, loc: tuple[Any, ...]) -> None:
    s = Stream() if isinstance(command, PlaceOrder) else placed()
    err = refused(s, command)
    assert err.code == "mixed_currency"
    assert err.field_errors[0].loc == loc
    assert "one currency per order" in err.reason


@pytest.mark.parametrize(
    ("currency", "price", "reason"),
    [
        ("AUD", "1.005", "AUD has 2 decimal places"),
        ("JPY", "10.5", "JPY has 0 decimal places"),
        ("KWD", "1.0005", "KWD has 3 decimal places"),
    ],
)
def test_too_many_decimals_for_the_currency_is_refused_never_rounded(
    currency: str, price: str, reason: str
) -> None:
    err = refused(
        Stream(), body(PlaceOrder, {"currency": currency, "items": [{**ITEMS[0], "price_sell": price}]})
    )
    assert err.code == "too_many_decimals"
    assert reason in err.reason
    assert err.field_errors[0].loc == ("items", 0, "price_sell")


def test_every_bad_amount_is_reported_at_once() -> None:
    items = [{**ITEMS[0], "price_sell": "1.001"}, {**ITEMS[1], "price_original": "2.002"}]
    err = refused(Stream(), body(PlaceOrder, {"items": items}))
    assert {e.loc for e in err.field_errors} == {("items", 0, "price_sell"), ("items", 1, "price_original")}


def test_a_payment_with_too_many_decimals_is_refused() -> None:
    assert refused(placed(), pay("captured", "0.001")).code == "too_many_decimals"


def test_subtotal_that_is_not_the_sum_of_the_lines_is_refused() -> None:
    err = refused(Stream(), body(PlaceOrder, {"items": ITEMS, "subtotal": "120.00"}))
    assert err.code == "subtotal_mismatch"
    assert "130.00 AUD" in err.reason


def test_total_that_does_not_add_up_with_lines_and_breakdown_is_refused() -> None:
    err = refused(Stream(), body(PlaceOrder, {"items": ITEMS, "shipping": "10.00", "total": "130.00"}))
    assert err.code == "total_mismatch"
    assert "= 140.00 AUD" in err.reason


def test_total_of_lines_without_breakdown_must_match_the_lines() -> None:
    assert refused(Stream(), body(PlaceOrder, {"items": ITEMS, "total": "150.00"})).code == "total_mismatch"


def test_tax_excluded_prices_add_tax_to_the_total() -> None:
    s = Stream()
    s.send(body(PlaceOrder, {"items": ITEMS, "tax": "13.00", "tax_included": False, "total": "143.00"}))
    assert s.order.amounts.total == 14300


def test_a_discount_larger_than_the_order_is_refused() -> None:
    assert (
        refused(Stream(), body(PlaceOrder, {"items": ITEMS, "discount": "200.00"})).code == "negative_total"
    )


@pytest.mark.parametrize(
    ("payments", "last", "code"),
    [
        ([], ("captured", "130.01"), "capture_exceeds_total"),
        ([("captured", "100.00")], ("captured", "30.01"), "capture_exceeds_total"),
        ([("captured", "50.00")], ("refunded", "50.01"), "refund_exceeds_captured"),
        ([("captured", "50.00"), ("refunded", "50.00")], ("refunded", "0.01"), "refund_exceeds_captured"),
        ([], ("refunded", "1.00"), "refund_exceeds_captured"),
        ([("authorized", "50.00")], ("voided", "50.01"), "void_exceeds_authorized"),
        ([("authorized", "130.00")], ("authorized", "0.01"), "authorization_exceeds_total"),
    ],
)
def test_payment_limits(payments: list[tuple[str, str]], last: tuple[str, str], code: str) -> None:
    s = placed()
    for kind, amount in payments:
        s.send(pay(kind, amount))
    err = refused(s, pay(*last))
    assert err.code == code
    assert "allowed" in err.reason
    assert err.field_errors[0].loc == ("amount",)


def test_shipping_more_than_remains_unshipped_is_refused() -> None:
    s = placed()
    s.send(ship([{"sku": "A", "quantity": 1}]))
    err = refused(s, ship([{"sku": "A", "quantity": 1}, {"line_id": "L1", "quantity": 1}]))
    assert err.code == "over_shipped"
    assert "line L1: 2 asked, 1 left" in err.reason


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ({"line_id": "nope", "quantity": 1}, "unknown_line"),
        ({"sku": "nope", "quantity": 1}, "unknown_sku"),
    ],
)
def test_shipments_name_only_existing_lines(line: dict[str, Any], code: str) -> None:
    assert refused(placed(), ship([line])).code == code


def test_an_sku_on_two_lines_is_ambiguous() -> None:
    s = placed(items=[ITEMS[0], {**ITEMS[1], "sku": "A"}])
    assert refused(s, ship([{"sku": "A", "quantity": 1}])).code == "ambiguous_sku"


def test_resending_a_shipment_with_the_same_id_and_lines_is_a_no_op_and_other_lines_a_conflict() -> None:
    s = placed()
    s.send(ship([{"sku": "A", "quantity": 1}], shipment_id="BOX-1"))
    assert s.send(ship([{"line_id": "L1", "quantity": 1}], shipment_id="BOX-1")) == []
    assert refused(s, ship([{"sku": "B", "quantity": 1}], shipment_id="BOX-1")).code == "shipment_exists"


def test_delivering_an_unknown_shipment_is_not_found_and_twice_is_a_no_op() -> None:
    s = placed()
    err = refused(s, body(MarkDelivered, {"shipment_id": "S9"}))
    assert (err.code, err.kind) == ("shipment_not_found", "not_found")
    s.send(ship([{"sku": "A", "quantity": 2}]))
    assert len(s.send(body(MarkDelivered, {"shipment_id": "S1"}))) == 1
    assert s.send(body(MarkDelivered, {"shipment_id": "S1"})) == []


@pytest.mark.parametrize(
    "update",
    [
        {"items": [ITEMS[0]]},
        {"items": ITEMS, "shipping": "5.00"},
        {"total": "200.00"},
    ],
)
def test_lines_and_amounts_are_frozen_once_anything_shipped(update: dict[str, Any]) -> None:
    s = placed()
    s.send(ship([{"sku": "B", "quantity": 1}]))
    assert refused(s, body(UpdateOrder, update)).code == "lines_frozen"


def test_status_and_details_still_change_after_shipping() -> None:
    s = placed()
    s.send(ship([{"sku": "B", "quantity": 1}]))
    assert [e.type for e in s.send(body(UpdateOrder, {"status": "shipped", "note": "gift"}))] == [
        "OrderDetailsChanged",
        "OrderStatusChanged",
    ]


def test_the_total_cannot_drop_below_what_was_captured() -> None:
    s = placed()
    s.send(pay("captured", "130.00"))
    assert refused(s, body(UpdateOrder, {"items": [ITEMS[0]]})).code == "total_below_captured"


def test_a_fully_shipped_order_cannot_be_canceled() -> None:
    s = placed()
    s.send(ship([{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}]))
    assert refused(s, body(CancelOrder, {})).code == "order_fully_shipped"


def test_only_shipped_quantities_can_be_restocked_on_a_live_order() -> None:
    s = placed()
    s.send(ship([{"sku": "A", "quantity": 1}]))
    assert refused(s, body(RestockItems, {"lines": [{"sku": "A", "quantity": 2}]})).code == "over_restocked"


def test_repeated_line_ids_are_refused() -> None:
    items = [{**ITEMS[0], "line_id": "X"}, {**ITEMS[1], "line_id": "X"}]
    assert refused(Stream(), body(PlaceOrder, {"items": items})).code == "duplicate_line_id"


@pytest.mark.parametrize(
    "command",
    [
        body(UpdateOrder, {"items": ITEMS, "status": "pending", "currency": "AUD"}),
        body(UpdateOrder, {"total": "130.00"}),
        body(UpdateOrder, {}),
    ],
)
def test_an_update_that_changes_nothing_decides_no_events(command: Any) -> None:
    assert placed().send(command) == []


def test_canceling_twice_is_a_no_op() -> None:
    s = placed()
    s.send(body(CancelOrder, {}))
    assert s.send(body(CancelOrder, {"reason": "again"})) == []


def test_an_omneo_style_cancelled_status_cancels_the_order_and_repeating_it_is_a_no_op() -> None:
    s = placed()
    events = s.send(body(UpdateOrder, {"status": "cancelled"}))
    assert [e.type for e in events] == ["OrderCanceled"]
    assert s.order.canceled
    assert s.order.status == "cancelled"
    assert s.send(body(UpdateOrder, {"status": "cancelled"})) == []
    assert s.send(body(UpdateOrder, {"status": "canceled"})) == []
    assert refused(s, body(UpdateOrder, {"status": "pending"})).code == "order_canceled"


@pytest.mark.parametrize(
    "cancel",
    [
        body(CancelOrder, {"reason": "changed mind"}),
        body(UpdateOrder, {"status": "cancelled"}),
        body(UpdateOrder, {"status": "Canceled"}),
    ],
    ids=["cancel-endpoint", "put-cancelled", "put-Canceled"],
)
def test_every_way_of_canceling_reads_as_status_cancelled(cancel: Any) -> None:
    s = placed(status="processing")
    s.send(cancel)
    assert (s.order.canceled, s.order.status) == (True, "cancelled")
    # a repeat by the other route is a no-op, not a refusal
    assert s.send(body(CancelOrder, {})) == []
    assert s.send(body(UpdateOrder, {"status": "cancelled"})) == []


def test_a_log_written_before_the_fix_folds_a_canceled_order_to_status_cancelled() -> None:
    """The cancel endpoint used to append `OrderCanceled` and leave `status` as it was; the
    fold, not the command, sets the status, so those immutable events read right too."""
    from ledger.domain import OrderCanceled, fold

    s = placed(status="pending")
    assert s.order.status == "pending"
    old = [*s.log, (OrderCanceled(reason=None, canceled_at=s.clock), len(s.log) + 1, s.clock)]
    assert fold(old).status == "cancelled"

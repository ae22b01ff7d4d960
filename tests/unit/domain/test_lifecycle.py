"""Whole order lives, with derived statuses and Transactions checked after every step."""

from __future__ import annotations

from decimal import Decimal

from ledger.domain import (
    CancelOrder,
    DispatchShipment,
    MarkDelivered,
    PlaceOrder,
    RecordPayment,
    RestockItems,
    UpdateOrder,
    derive_transactions,
    fold,
    fulfillment_status,
    payment_status,
)
from tests.unit.domain.helpers import Stream, body

PLACE = {
    "external_id": "CART-1",
    "profile_id": "p-1",
    "currency": "AUD",
    "shipping": "10.00",
    "items": [
        {"name": "Coat", "sku": "A", "quantity": 2, "price_sell": "50.00"},
        {"name": "Scarf", "sku": "B", "quantity": 1, "price_sell": "30.00"},
    ],
}


def statuses(s: Stream) -> tuple[str, str, list[int]]:
    order = s.order
    return payment_status(order), fulfillment_status(order), [t.total for t in derive_transactions(order)]


def pay(kind: str, amount: str) -> RecordPayment:
    return body(RecordPayment, {"kind": kind, "amount": amount})


def ship(*lines: tuple[str, int]) -> DispatchShipment:
    return body(
        DispatchShipment, {"lines": [{"sku": sku, "quantity": q} for sku, q in lines], "carrier": "AP"}
    )


def test_full_lifecycle_from_placement_to_delivery_derives_statuses_and_transactions_at_every_step() -> None:
    s = Stream()
    s.send(body(PlaceOrder, PLACE))
    assert s.order.amounts.total == 14000
    assert statuses(s) == ("awaitingPayment", "unfulfilled", [])

    items = [*PLACE["items"], {"name": "Hat", "sku": "C", "quantity": 1, "price_sell": "20.00"}]
    s.send(body(UpdateOrder, {"items": items}))
    assert s.order.amounts.total == 16000  # 150.00 of lines + 10.00 shipping kept
    assert [line.line_id for line in s.order.lines] == ["L1", "L2", "L3"]  # ids kept for unchanged items
    assert statuses(s) == ("awaitingPayment", "unfulfilled", [])

    s.send(pay("authorized", "160.00"))
    assert statuses(s) == ("awaitingPayment", "unfulfilled", [])

    s.send(pay("captured", "100.00"))
    assert statuses(s) == ("partiallyPaid", "unfulfilled", [])

    s.send(ship(("A", 2)))
    # 100.00 of lines + 100/150 of the 10.00 shipping = 106.67 > 100.00 captured: not yet a Transaction.
    assert statuses(s) == ("partiallyPaid", "inProgress", [])

    s.send(pay("captured", "60.00"))
    assert statuses(s) == ("paid", "inProgress", [10667])
    first = derive_transactions(s.order)[0]
    assert first.transacted_at == s.clock  # completed when the covering capture arrived
    assert first.external_id == f"{s.order.id}:S1"

    s.send(ship(("B", 1), ("C", 1)))
    assert statuses(s) == ("paid", "fulfilled", [10667, 5333])
    assert sum(t.total for t in derive_transactions(s.order)) == s.order.amounts.total

    s.send(body(MarkDelivered, {"shipment_id": "S1"}))
    assert statuses(s)[1] == "fulfilled"
    s.send(body(MarkDelivered, {"shipment_id": "S2"}))
    assert statuses(s) == ("paid", "delivered", [10667, 5333])
    assert s.order.version == len(s.log) == 9
    assert fold(s.log) == s.order


def test_refunds_move_payment_status_and_a_full_refund_voids_every_transaction() -> None:
    s = Stream()
    s.send(body(PlaceOrder, PLACE))
    s.send(pay("captured", "140.00"))
    s.send(ship(("A", 2), ("B", 1)))
    assert statuses(s) == ("paid", "fulfilled", [14000])

    s.send(pay("refunded", "30.00"))
    assert statuses(s) == ("partiallyRefunded", "fulfilled", [14000])
    assert not derive_transactions(s.order)[0].voided

    s.send(body(RestockItems, {"lines": [{"sku": "B", "quantity": 1}]}))
    assert fulfillment_status(s.order) == "fulfilled"  # only part came back
    s.send(pay("refunded", "110.00"))
    assert payment_status(s.order) == "refunded"
    assert [t.voided for t in derive_transactions(s.order)] == [True]
    s.send(body(RestockItems, {"lines": [{"sku": "A", "quantity": 2}]}))
    assert fulfillment_status(s.order) == "restocked"


def test_cancel_after_partial_shipment_keeps_earlier_transactions_and_allows_refund_of_the_rest() -> None:
    s = Stream()
    s.send(body(PlaceOrder, PLACE))
    s.send(pay("authorized", "140.00"))
    s.send(pay("captured", "140.00"))
    s.send(ship(("A", 2)))
    # 100.00 of lines + 100/130 of the 10.00 shipping (7.69).
    assert statuses(s) == ("paid", "inProgress", [10769])

    s.send(body(CancelOrder, {"reason": "customer changed mind"}))
    assert s.order.canceled
    assert s.order.cancel_reason == "customer changed mind"
    assert statuses(s) == ("paid", "inProgress", [10769])

    s.send(pay("refunded", "32.31"))
    assert statuses(s) == ("partiallyRefunded", "inProgress", [10769])
    s.send(body(RestockItems, {"lines": [{"sku": "B", "quantity": 1}]}))  # unshipped stock released
    assert s.order.restocked_quantities() == {"L2": 1}


def test_cancel_before_capture_then_void_gives_voided_and_no_transactions() -> None:
    s = Stream()
    s.send(body(PlaceOrder, PLACE))
    s.send(pay("authorized", "140.00"))
    s.send(body(CancelOrder, {"reason": "fraud check failed"}))
    assert statuses(s) == ("awaitingPayment", "unfulfilled", [])
    s.send(pay("voided", "140.00"))
    assert statuses(s) == ("voided", "unfulfilled", [])
    assert s.order.voided == 14000


def test_seed_create_then_seed_update_is_accepted_and_the_bare_total_becomes_an_adjustment() -> None:
    from tests.unit.domain.helpers import SEED_CREATE, SEED_UPDATE

    s = Stream()
    s.send(body(PlaceOrder, SEED_CREATE))
    order = s.order
    assert order.currency == "AUD"  # default
    assert order.status == "pending"
    assert order.amounts.total == 19995
    assert order.lines[0].variant_id == 441200
    assert order.customer.profile_id == "9332c9b2-e31c-4d49-8ec3-62a9466d339c"

    events = s.send(body(UpdateOrder, SEED_UPDATE))
    assert [e.type for e in events] == ["OrderLinesChanged", "OrderStatusChanged"]
    assert s.order.status == "processing"
    assert s.order.amounts.total == 24990
    assert s.order.amounts.adjustment == 24990 - 19995
    assert fulfillment_status(s.order) == "inProgress"
    # Fully shipped and paid, the single Transaction carries the adjustment too.
    s.send(pay("captured", "249.90"))
    s.send(body(DispatchShipment, {"lines": [{"line_id": "L1", "quantity": 1}]}))
    assert [t.total for t in derive_transactions(s.order)] == [24990]
    assert Decimal("249.90") == Decimal(24990) / 100

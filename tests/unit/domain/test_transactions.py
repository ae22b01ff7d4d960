"""Transactions: paid shipments, order-level amounts apportioned, exact sums, prefix coverage."""

from __future__ import annotations

from typing import Any

from ledger.domain import (
    DispatchShipment,
    PlaceOrder,
    RecordPayment,
    derive_transactions,
)
from tests.unit.domain.helpers import Stream, body


def order(items: list[dict[str, Any]], **extra: Any) -> Stream:
    s = Stream()
    s.send(body(PlaceOrder, {"items": items, **extra}))
    return s


def ship(s: Stream, *line_ids: str) -> None:
    s.send(body(DispatchShipment, {"lines": [{"line_id": i, "quantity": 1} for i in line_ids]}))


def capture(s: Stream, amount: str) -> None:
    s.send(body(RecordPayment, {"kind": "captured", "amount": amount}))


THREE = [{"name": n, "quantity": 1, "price_sell": "10.00"} for n in "ABC"]


def test_three_equal_shipments_share_shipping_and_the_last_takes_the_remainder() -> None:
    s = order(THREE, shipping="10.00")
    capture(s, "40.00")
    for line_id in ("L1", "L2", "L3"):
        ship(s, line_id)
    txs = derive_transactions(s.order)
    assert [t.order_amounts_share for t in txs] == [333, 334, 333]
    assert [t.total for t in txs] == [1333, 1334, 1333]
    assert sum(t.total for t in txs) == s.order.amounts.total == 4000
    assert [t.sequence for t in txs] == [1, 2, 3]
    assert len({t.external_id for t in txs}) == 3


def test_an_order_discount_is_apportioned_as_a_negative_share() -> None:
    s = order(THREE, discount="1.00")
    capture(s, "29.00")
    ship(s, "L1")
    ship(s, "L2", "L3")
    assert [t.total for t in derive_transactions(s.order)] == [967, 1933]


def test_a_later_shipment_waits_until_captures_cover_every_shipment_before_it() -> None:
    s = order(THREE)
    capture(s, "10.00")
    ship(s, "L1")
    ship(s, "L2")
    assert [t.shipment_id for t in derive_transactions(s.order)] == ["S1"]
    capture(s, "9.99")
    assert [t.shipment_id for t in derive_transactions(s.order)] == ["S1"]
    capture(s, "0.01")
    txs = derive_transactions(s.order)
    assert [t.shipment_id for t in txs] == ["S1", "S2"]
    assert txs[1].transacted_at == s.clock > txs[1].dispatched_at


def test_with_all_lines_free_order_amounts_are_shared_by_quantity() -> None:
    s = order([{"name": "Free", "quantity": 3, "price_sell": "0"}], shipping="10.00")
    capture(s, "10.00")
    s.send(body(DispatchShipment, {"lines": [{"line_id": "L1", "quantity": 1}]}))
    s.send(body(DispatchShipment, {"lines": [{"line_id": "L1", "quantity": 2}]}))
    assert [t.total for t in derive_transactions(s.order)] == [333, 667]


def test_a_zero_total_order_becomes_transactions_when_dispatched() -> None:
    s = order([{"name": "Sample", "quantity": 1, "price_sell": "0"}])
    ship(s, "L1")
    assert [(t.total, t.transacted_at) for t in derive_transactions(s.order)] == [(0, s.clock)]


def test_transactions_carry_shipped_lines_quantities_and_the_order_ids() -> None:
    s = order([{"name": "Mug", "sku": "M", "product_variant_id": 7, "quantity": 3, "price_sell": "2.50"}])
    capture(s, "7.50")
    s.send(body(DispatchShipment, {"lines": [{"sku": "M", "quantity": 2}], "location_id": "WH1"}))
    (tx,) = derive_transactions(s.order)
    assert (tx.lines[0].line_id, tx.lines[0].quantity, tx.lines[0].value, tx.lines[0].variant_id) == (
        "L1",
        2,
        500,
        7,
    )
    assert (tx.order_id, tx.location_id, tx.currency, tx.voided) == (s.order.id, "WH1", "AUD", False)

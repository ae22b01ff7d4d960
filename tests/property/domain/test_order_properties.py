"""Properties of the domain over random command sequences (docs/reliability.md#i1, #i3, #i6).

Each example places an order and applies up to 25 random commands, valid or not. Whatever
happens: only DomainError is ever raised, nothing is appended on a refusal, the fold of the
log equals the incrementally built state, the JSON view inverts exactly, and the money and
shipment invariants hold.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ledger.domain import (
    CURRENCY_EXPONENTS,
    MAX_MINOR,
    CancelOrder,
    Command,
    DeleteOrder,
    DispatchShipment,
    DomainError,
    MarkDelivered,
    Order,
    PlaceOrder,
    RecordPayment,
    RestockItems,
    UpdateOrder,
    decode_event,
    derive_transactions,
    event_data,
    fold,
    fulfillment_status,
    order_from_json,
    order_to_json,
    payment_status,
    to_major,
    to_minor,
)
from tests.unit.domain.helpers import Stream

CURRENCIES = ["AUD", "JPY", "KWD", "USD"]


def major(minor: int, currency: str) -> Decimal:
    return to_major(minor, currency)


@st.composite
def items(draw: st.DrawFn, currency: str) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 4))
    return [
        {
            "name": f"Item {i}",
            "sku": f"SKU{i}",
            "quantity": draw(st.integers(1, 4)),
            "price_sell": major(draw(st.integers(0, 50_000)), currency),
        }
        for i in range(n)
    ]


@st.composite
def place_orders(draw: st.DrawFn) -> PlaceOrder:
    currency = draw(st.sampled_from(CURRENCIES))
    lines = draw(items(currency))
    subtotal = sum(int(i["price_sell"].scaleb(2 if currency in ("AUD", "USD") else 0)) for i in lines)
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["shipping"] = major(draw(st.integers(0, 2_000)), currency)
    if draw(st.booleans()):
        extra["discount"] = major(draw(st.integers(0, max(subtotal // 3, 0))), currency)
    return PlaceOrder.model_validate({"currency": currency, "items": lines, **extra})


def amount(draw: st.DrawFn, order: Order, around: int) -> Decimal:
    """Mostly sensible amounts near ``around``, sometimes over it, sometimes with too many decimals."""
    minor = draw(st.one_of(st.just(around), st.integers(1, max(around, 1)), st.integers(1, around + 1000)))
    value = major(max(minor, 1), order.currency)
    if draw(st.integers(0, 19)) == 0:
        value += Decimal("0.0001")
    return value


@st.composite
def commands(draw: st.DrawFn, order: Order) -> Command:
    shipped = order.shipped_quantities()
    remaining = {line.line_id: line.quantity - shipped.get(line.line_id, 0) for line in order.lines}
    # Weights by repetition; delete and cancel are rare and last (Hypothesis favours early choices).
    common = ["capture", "ship", "authorize", "refund", "void", "deliver", "restock", "update", "status"]
    kind = draw(st.sampled_from([*common * 4, "ship", "ship", "capture", "cancel", "delete"]))
    if kind == "delete":
        return DeleteOrder()
    if kind == "cancel":
        return CancelOrder(reason="r")
    p = order.payments
    if kind == "capture":
        return RecordPayment(kind="captured", amount=amount(draw, order, order.amounts.total - p.captured))
    if kind == "authorize":
        return RecordPayment(kind="authorized", amount=amount(draw, order, order.amounts.total))
    if kind == "refund":
        return RecordPayment(kind="refunded", amount=amount(draw, order, p.captured - p.refunded))
    if kind == "void":
        return RecordPayment(kind="voided", amount=amount(draw, order, p.authorized - p.voided))
    if kind == "ship":
        line_ids = draw(st.lists(st.sampled_from(sorted(remaining)), min_size=1, max_size=3, unique=True))
        lines = [{"line_id": i, "quantity": draw(st.integers(1, max(remaining[i], 1) + 1))} for i in line_ids]
        return DispatchShipment.model_validate({"lines": lines, "carrier": "AP"})
    if kind == "deliver":
        ids = [s.shipment_id for s in order.shipments] or ["S1"]
        return MarkDelivered(shipment_id=draw(st.sampled_from(ids)))
    if kind == "restock":
        line_id = draw(st.sampled_from(sorted(remaining)))
        return RestockItems.model_validate(
            {"lines": [{"line_id": line_id, "quantity": draw(st.integers(1, 3))}]}
        )
    if kind == "update":
        if draw(st.booleans()):
            return UpdateOrder.model_validate({"items": draw(items(order.currency))})
        return UpdateOrder(total=major(draw(st.integers(0, order.amounts.total + 5000)), order.currency))
    if kind == "status":
        return UpdateOrder(status=draw(st.sampled_from(["pending", "processing", "shipped"])), note="n")
    return UpdateOrder(tags=["t"])


def check_invariants(s: Stream) -> None:
    order = s.order
    # I3: versions contiguous from 1, the state at the last one.
    assert [v for _, v, _ in s.log] == list(range(1, len(s.log) + 1))
    assert order.version == len(s.log)
    # I1: replay equals the incremental state; the JSON view inverts exactly.
    assert fold(s.log) == order
    assert order_from_json(order_to_json(order)) == order
    # I6 and money rules.
    p = order.payments
    assert 0 <= p.refunded <= p.captured <= order.amounts.total
    shipped = order.shipped_quantities()
    assert all(shipped.get(line.line_id, 0) <= line.quantity for line in order.lines)
    assert set(shipped) <= {line.line_id for line in order.lines}
    txs = derive_transactions(order)
    assert len({t.shipment_id for t in txs}) == len(txs)
    assert [t.shipment_id for t in txs] == [sh.shipment_id for sh in order.shipments][: len(txs)]
    assert {t.currency for t in txs} <= {order.currency}
    assert sum(t.total for t in txs) <= p.captured or order.amounts.total == 0
    if order.fully_shipped and p.captured >= order.amounts.total:
        assert len(txs) == len(order.shipments)
        assert sum(t.total for t in txs) == order.amounts.total
    assert all(t.voided == (p.captured > 0 and p.refunded >= p.captured) for t in txs)
    payment_status(order)
    assert fulfillment_status(order) == fulfillment_rules(order)


def fulfillment_rules(order: Order) -> str:
    """The fulfilment rules as ``ledger.domain.statuses`` documents them, written plainly: the
    oracle for its hand-tuned loops."""
    shipped = order.shipped_quantities()
    if order.restocks:
        restocked = order.restocked_quantities()
        if all(restocked.get(line_id, 0) >= qty for line_id, qty in shipped.items()):
            return "restocked"
    if order.lines and all(shipped.get(line.line_id, 0) >= line.quantity for line in order.lines):
        return "delivered" if all(s.delivered_at is not None for s in order.shipments) else "fulfilled"
    if shipped or order.status.strip().lower() in {
        "processing",
        "in_progress",
        "inprogress",
        "in progress",
        "picking",
        "packing",
        "packed",
        "fulfilling",
    }:
        return "inProgress"
    return "unfulfilled"


@settings(max_examples=120)
@given(place=place_orders(), data=st.data())
def test_random_command_sequences_only_raise_domain_errors_and_keep_every_invariant(
    place: PlaceOrder, data: st.DataObject
) -> None:
    s = Stream()
    s.send(place)
    check_invariants(s)
    for _ in range(data.draw(st.integers(1, 25))):
        command = data.draw(commands(s.order))
        before = s.order
        refusal: DomainError | None = None
        try:
            s.send(command)
        except DomainError as exc:
            refusal = exc
        event(f"refused {refusal.code}" if refusal else f"accepted {type(command).__name__}")
        if refusal is not None:
            assert refusal.reason
            assert s.order is before  # a refusal appends nothing
        check_invariants(s)
    # I1 through the store codec: what a projection replays folds to the same state.
    replayed = [(decode_event(e.type, json.dumps(event_data(e))), v, at) for e, v, at in s.log]
    assert fold(replayed) == s.order


@settings(max_examples=200)
@given(currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)), minor=st.integers(-MAX_MINOR, MAX_MINOR))
def test_minor_units_survive_a_round_trip_through_major_units_in_every_currency(
    currency: str, minor: int
) -> None:
    assert to_minor(to_major(minor, currency), currency) == minor
    assert to_minor(str(to_major(minor, currency)), currency) == minor


@settings(max_examples=60)
@given(place=place_orders(), data=st.data())
def test_fully_shipped_and_paid_orders_have_transactions_adding_up_to_the_total(
    place: PlaceOrder, data: st.DataObject
) -> None:
    s = Stream()
    s.send(place)
    order = s.order
    if order.amounts.total:
        s.send(RecordPayment(kind="captured", amount=major(order.amounts.total, order.currency)))
    # Ship every unit in a random number of shipments.
    units = [line.line_id for line in order.lines for _ in range(line.quantity)]
    order_of_units = data.draw(st.permutations(units))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(len(units) - 1, 1)), max_size=4)))
    chunks = [
        order_of_units[a:b]
        for a, b in zip([0, *cuts], [*cuts, len(units)], strict=True)
        if order_of_units[a:b]
    ]
    for chunk in chunks:
        counts: dict[str, int] = {}
        for line_id in chunk:
            counts[line_id] = counts.get(line_id, 0) + 1
        s.send(
            DispatchShipment.model_validate(
                {"lines": [{"line_id": k, "quantity": v} for k, v in counts.items()]}
            )
        )
    txs = derive_transactions(s.order)
    assert len(txs) == len(chunks)
    assert sum(t.total for t in txs) == s.order.amounts.total
    assert fulfillment_status(s.order) == "fulfilled"
    assert payment_status(s.order) == "paid"

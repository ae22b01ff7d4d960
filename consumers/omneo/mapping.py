"""Ledger envelope -> Omneo calls (docs/connectors.md#omneo, #mapping), as pure functions.

Omneo keeps two records: the mutable Order (no upsert: POST once, then PUT merges) and one
immutable Transaction per paid shipment (`update-create` by a deterministic `external_id`,
so re-sending is harmless). Both are derived from the order state after the event, not from
the event alone, so a redelivered, replayed or coalesced event maps to the same calls.

`sent` (from delivery state) holds digests of what Omneo already has: per order field group
and per transaction. Only what changed is sent: PUT carries the changed fields (Omneo's PUT is
a merge, and whether `items` replace or append is unconfirmed [X], so items go out only when
the lines changed), and a transaction is upserted when it is new or changed (a full refund
voids it: same external_id, `is_void: true`).

Partial refunds and returns: Omneo documents no form for them (docs/connectors.md#omneo-returns),
and a Transaction is an immutable record of what occurred, so each partial refund after a sale
becomes a *return Transaction* of its own (`{order}:refund:{n}`): a negative `total` (the refund,
capped at what the sales recorded), the returned lines at negative quantities, linked to the
Omneo order like the sales. Spend-based loyalty then nets to what the shopper kept. A later full
refund voids the sales and the returns alike, so nothing is taken back twice.

Paths and bodies refer to the Omneo order id through `REMOTE_ID`; the worker fills it in
from delivery state or from the create made just before.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from consumers.fanout.applicability import NotApplicable
from consumers.fanout.mapping_types import REMOTE_ID, DestinationCall, Envelope
from ledger.domain.money import to_major
from ledger.domain.state import Order
from ledger.domain.statuses import fulfillment_status, payment_status
from ledger.domain.transactions import Transaction, derive_transactions
from ledger.domain.values import LineItem

__all__ = [
    "OmneoOptions",
    "OmneoState",
    "ReturnTransaction",
    "derive_returns",
    "map_batch",
    "map_event",
    "not_applicable",
    "omneo_status",
    "order_body",
    "return_body",
    "transaction_body",
]

_FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "money": ("total", "currency"),
    "items": ("items",),
    "customer": ("profile_id",),
}


@dataclass(frozen=True, slots=True)
class OmneoOptions:
    """Mapping choices that are settings.

    `default_location_id` is sent on Transactions whose shipment names no location (online
    orders): Omneo's SDK types `location_id` as a required string on a Transaction.
    """

    default_location_id: str | None = None


@dataclass(frozen=True, slots=True)
class OmneoState:
    """What Omneo already has for this order: its numeric id and digests of what was sent."""

    remote_id: str | None = None
    sent: Mapping[str, str] = field(default_factory=dict)


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _local(dt: Any) -> str:
    """Omneo's `YYYY-MM-DD HH:MM:SS` wall clock; the ledger works in UTC and says so in `timezone`."""
    text: str = dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return text


def _money(minor: int, currency: str) -> Decimal:
    return to_major(minor, currency)


def omneo_status(order: Order) -> str:
    """Omneo's free-text status: the producer's own, except the ledger's terminal facts."""
    if order.canceled:
        return "cancelled"
    if payment_status(order) == "refunded":
        return "refunded"
    fulfil = fulfillment_status(order)
    if fulfil in ("fulfilled", "delivered") and payment_status(order) == "paid":
        return fulfil
    return order.status


def _item(line: LineItem, quantity: int, c: str) -> dict[str, Any]:
    """An Omneo item: the line's unit prices and product identity, for an order or a Transaction.

    `price_current` is the product's current price, `price_sell` what was paid per unit
    (docs/connectors.md#omneo-transaction-fields: Omneo refunds against `price_sell`), `price_original` the list price.
    """
    item: dict[str, Any] = {
        "name": line.name,
        "external_id": line.line_id,
        "quantity": quantity,
        "price_current": _money(line.price_current, c),
        "price_sell": _money(line.price_sell, c),
        "price_original": _money(line.price_original, c),
    }
    if isinstance(line.variant_id, int) and not isinstance(line.variant_id, bool):
        item["product_variant_id"] = line.variant_id
    elif line.variant_id is not None:
        item["variant_external_id"] = str(line.variant_id)
    if line.sku:
        item["sku"] = line.sku
    return item


def _items(order: Order) -> list[dict[str, Any]]:
    c = order.currency
    out = []
    for line in order.lines:
        item = _item(line, line.quantity, c)
        if line.tax:
            item["price_tax"] = _money(line.tax, c)
        if line.discount:
            item["discounts"] = [{"amount": _money(line.discount, c), "reason_desc": "discount"}]
        out.append(item)
    return out


def order_body(order: Order) -> dict[str, Any]:
    """The full Omneo order (create body; PUT sends the changed groups of it)."""
    body: dict[str, Any] = {
        "external_id": str(order.id),
        "status": omneo_status(order),
        "total": _money(order.amounts.total, order.currency),
        "currency": order.currency,
        "occurred_at": _local(order.created_at),
        "timezone": "UTC",
        "items": _items(order),
    }
    if order.external_id:
        body["order_number"] = order.external_id
    if order.customer.profile_id:
        body["profile_id"] = order.customer.profile_id
    return body


def transaction_body(tx: Transaction, order: Order, options: OmneoOptions = OmneoOptions()) -> dict[str, Any]:
    """One paid shipment for `update-create`; `order_id` links it to the Omneo order."""
    c = tx.currency
    lines = {line.line_id: line for line in order.lines}
    body: dict[str, Any] = {
        "external_id": tx.external_id,
        "order_id": REMOTE_ID,
        "external_order_id": str(order.id),
        "total": _money(tx.total, c),
        "currency": c,
        "transacted_at": _local(tx.transacted_at),
        "timezone": "UTC",
        # The shipped quantity at the order line's prices (a Transaction is derived from the
        # current order, so each of its lines is one of the order's).
        "items": [_item(lines[line.line_id], line.quantity, c) for line in tx.lines],
    }
    if order.external_id:
        body["order_number"] = order.external_id
    body.update(_transaction_profile(order))
    location = tx.location_id or options.default_location_id
    if location:
        body["location_id"] = str(location)
    if tx.voided:
        body["is_void"] = True  # never send null (Omneo rejects is_void: null)
    return body


@dataclass(frozen=True, slots=True)
class ReturnTransaction:
    """One partial refund after a sale: what Omneo gets as a return Transaction (minor units)."""

    external_id: str
    amount: int
    at: datetime
    lines: tuple[tuple[LineItem, int], ...]
    location_id: str | None


def derive_returns(order: Order, sales: Sequence[Transaction]) -> list[ReturnTransaction]:
    """The order's refunds as return Transactions, oldest first (empty before any sale).

    Each refund is capped at what the sales recorded and the earlier returns did not take back
    (a refund of an unshipped part must not reduce the spend of a shipped one). Returned lines
    (restocks) go with the first refund at or after them, else with the last refund; each line
    at most as many as were sold. The location is the restock's, else the last sale's.
    """
    refunds = [e for e in order.payments.entries if e.kind == "refunded"]
    if not sales or not refunds:
        return []
    sold: dict[str, int] = {}
    for tx in sales:
        for line in tx.lines:
            sold[line.line_id] = sold.get(line.line_id, 0) + line.quantity
    returned: list[dict[str, int]] = [{} for _ in refunds]
    where: list[str | None] = [None for _ in refunds]
    for restock in order.restocks:
        k = next((i for i, r in enumerate(refunds) if r.at >= restock.at), len(refunds) - 1)
        where[k] = where[k] or restock.location_id
        for q in restock.lines:
            room = sold.get(q.line_id, 0)
            take = min(q.quantity, room)
            if take > 0:
                sold[q.line_id] = room - take
                returned[k][q.line_id] = returned[k].get(q.line_id, 0) + take
    lines = {line.line_id: line for line in order.lines}
    left = sum(tx.total for tx in sales)
    out = []
    for n, (refund, back) in enumerate(zip(refunds, returned, strict=True), start=1):
        amount = min(refund.amount, left)
        if amount <= 0:
            continue
        left -= amount
        out.append(
            ReturnTransaction(
                f"{order.id}:refund:{n}",
                amount,
                refund.at,
                tuple((lines[line_id], qty) for line_id, qty in back.items() if line_id in lines),
                where[n - 1] or sales[-1].location_id,
            )
        )
    return out


def return_body(
    ret: ReturnTransaction, order: Order, options: OmneoOptions = OmneoOptions(), *, voided: bool = False
) -> dict[str, Any]:
    """A return Transaction for `update-create`: negative total, returned lines at negative quantity.

    A refund with no returned lines (money only) carries one "Refund" item for its amount, as
    Omneo requires items on a Transaction.
    """
    c = order.currency
    items = [_item(line, -qty, c) for line, qty in ret.lines]
    if not items:
        amount = _money(ret.amount, c)
        items = [{"name": "Refund", "quantity": -1, "price_current": amount, "price_sell": amount}]
    body: dict[str, Any] = {
        "external_id": ret.external_id,
        "order_id": REMOTE_ID,
        "external_order_id": str(order.id),
        "total": -_money(ret.amount, c),
        "currency": c,
        "transacted_at": _local(ret.at),
        "timezone": "UTC",
        "items": items,
    }
    if order.external_id:
        body["order_number"] = order.external_id
    body.update(_transaction_profile(order))
    location = ret.location_id or options.default_location_id
    if location:
        body["location_id"] = str(location)
    if voided:
        body["is_void"] = True
    return body


def not_applicable(order: Order) -> NotApplicable | None:
    """Omneo can take every ledger order: an order needs `external_id`, `total`, `status` and
    items, which every ledger order has (the ledger refuses an order without items), and a
    Transaction may be anonymous (no profile; Omneo lets it be claimed later). So never.
    """
    del order
    return None


def _transaction_profile(order: Order) -> dict[str, str]:
    """Who the Transaction belongs to: the Omneo profile UUID, else the customer's email.

    Omneo documents `profile_id_handle: "email"` (profile_id is then an email) on Transactions,
    so loyalty is credited to the shopper instead of an anonymous Transaction that someone
    must claim later. Orders get the UUID only: whether `/orders` takes a handle is unknown.
    """
    customer = order.customer
    if customer.profile_id:
        return {"profile_id": customer.profile_id}
    if customer.email:
        return {"profile_id": customer.email, "profile_id_handle": "email"}
    return {}


def _group_digests(body: Mapping[str, Any]) -> dict[str, str]:
    return {f"order.{group}": digest([body.get(k) for k in keys]) for group, keys in _FIELD_GROUPS.items()}


ERASED = "PersonalDataErased"
"""The event an erasure appends (docs/privacy.md#destinations): Omneo's order is deleted, the
only documented way to remove what it holds of the customer through the order API."""


def _calls(
    order: Order, state: OmneoState, options: OmneoOptions, *, erased: bool = False
) -> list[DestinationCall]:
    order_id = str(order.id)
    path = f"/api/v3/orders/{REMOTE_ID}"
    if state.sent.get("order.erased"):
        return []  # deleted for an erasure: nothing of this order goes to Omneo again
    if erased:
        if state.remote_id is None:
            return []
        return [DestinationCall("omneo.order.delete", "DELETE", path, None, order_id, {"order.erased": "1"})]
    if order.deleted:
        if state.remote_id is None:
            return []
        return [DestinationCall("omneo.order.delete", "DELETE", path, None, order_id, {"order.deleted": "1"})]
    body = order_body(order)
    groups = _group_digests(body)
    calls: list[DestinationCall] = []
    if state.remote_id is None:
        calls.append(DestinationCall("omneo.order.create", "POST", "/api/v3/orders", body, order_id, groups))
    else:
        changed = [g for g, d in groups.items() if state.sent.get(g) != d]
        if changed:
            update = {
                k: body[k] for g in changed for k in _FIELD_GROUPS[g.removeprefix("order.")] if k in body
            }
            remember = {g: groups[g] for g in changed}
            if update:
                calls.append(DestinationCall("omneo.order.update", "PUT", path, update, order_id, remember))
    sales = derive_transactions(order)
    bodies = [(tx.external_id, transaction_body(tx, order, options)) for tx in sales]
    voided = bool(sales) and sales[0].voided
    # Fully refunded: void the returns Omneo has; one it never had need not be sent at all.
    bodies.extend(
        (ret.external_id, return_body(ret, order, options, voided=voided))
        for ret in derive_returns(order, sales)
        if not voided or f"tx:{ret.external_id}" in state.sent
    )
    for external_id, tx_body in bodies:
        d = digest(tx_body)
        if state.sent.get(f"tx:{external_id}") == d:
            continue
        calls.append(
            DestinationCall(
                "omneo.transaction.upsert",
                "POST",
                "/api/v3/transactions/update-create",
                tx_body,
                external_id,
                {f"tx:{external_id}": d},
            )
        )
    return calls


def map_event(
    env: Envelope, state: OmneoState, options: OmneoOptions = OmneoOptions()
) -> list[DestinationCall]:
    """The calls one event causes, given what Omneo already has."""
    return _calls(env.order, state, options, erased=env.type == ERASED)


def map_batch(
    envs: Sequence[Envelope], state: OmneoState, options: OmneoOptions = OmneoOptions()
) -> list[DestinationCall]:
    """Several pending events of ONE order: the latest state is enough (the mapping is a diff
    of state against what was sent, and update-create/PUT-merge only care about the result)."""
    if not envs:
        return []
    return _calls(envs[-1].order, state, options, erased=any(env.type == ERASED for env in envs))

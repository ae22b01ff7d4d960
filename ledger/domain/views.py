"""The order's JSON view (HTTP ``data`` and the Kafka envelope's ``order``), and its inverse.

Money is returned as :class:`~decimal.Decimal` major units with exactly the currency's
decimals (``199.95``, ``1000`` for JPY), because JSON numbers must not pass through floats.
Serialize with orjson as real JSON numbers::

    orjson.dumps(view, default=lambda d: orjson.Fragment(str(d)))

Everything else is JSON-native (UUIDs and datetimes as strings, ISO 8601 with offset).
:func:`order_from_json` rebuilds the exact :class:`Order` from that dict, whether its numbers
are ``Decimal`` (best: ``json.loads(s, parse_float=Decimal)``), ints, strings, or floats
(parsed through ``repr``, exact for amounts of up to 15 significant digits). Derived parts
(statuses, transactions, sums) are ignored on the way back: they are functions of the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from ledger.domain.money import exponent, to_minor
from ledger.domain.state import Order, PaymentEntry, Payments, Restock, Shipment
from ledger.domain.statuses import fulfillment_status, payment_status
from ledger.domain.transactions import Transaction, derive_transactions
from ledger.domain.values import Address, Amounts, Customer, LineItem, OrderDetails, QuantityLine
from ledger_kernel.wire.codec import decimal_fragment

__all__ = [
    "DECIMAL_MONEY",
    "ISO_DATETIMES",
    "NATIVE_DATETIMES",
    "MoneyFormat",
    "Timestamps",
    "order_from_json",
    "order_to_json",
    "transaction_to_json",
]

_LINE_MONEY = ("price_sell", "price_current", "price_original", "discount", "tax")
_AMOUNTS = ("subtotal", "discount", "tax", "shipping", "total")

#: Major units for one currency: ``minor -> value`` (a memo's ``__getitem__``).
Major = Callable[[int], Any]


class _MajorMemo(dict[int, Any]):
    """``minor -> major-unit value`` for one currency, memoized.

    Speed: ``Decimal(minor).scaleb(-exp)`` costs ~0.35 µs and an order view holds dozens of
    amounts, most of them repeats (prices, zeros, sums); a hit is a C-level dict lookup (~0.05 µs).
    The values are immutable, so sharing them between views is safe. Cleared when full.
    """

    __slots__ = ("exp", "limit", "make")

    def __init__(self, exp: int, make: Callable[[Decimal], Any], limit: int) -> None:
        super().__init__()
        self.exp = exp
        self.make = make
        self.limit = limit

    def __missing__(self, minor: int) -> Any:
        if len(self) >= self.limit:
            self.clear()
        value = self[minor] = self.make(Decimal(minor).scaleb(-self.exp))
        return value


class MoneyFormat:
    """How the views write money: ``make(major)`` of the exact :func:`to_major` Decimal.

    The default (:data:`DECIMAL_MONEY`) keeps the Decimal. A serializer may pass its own
    pre-serialized form instead (e.g. an ``orjson.Fragment`` of ``str(major)``), saving a
    per-amount ``default`` callback; whatever ``make`` returns is memoized per currency.
    """

    def __init__(self, make: Callable[[Decimal], Any], limit: int = 50_000) -> None:
        self._make = make
        self._limit = limit
        self._memos: dict[str, Major] = {}

    def major(self, currency: str) -> Major:
        """The converter of ``currency`` (unknown codes raise :class:`MoneyError`, as :func:`to_major`)."""
        memo = self._memos.get(currency)
        if memo is None:
            memo = self._memos[currency] = _MajorMemo(exponent(currency), self._make, self._limit).__getitem__
        return memo


def _same(value: Decimal) -> Decimal:
    return value


DECIMAL_MONEY = MoneyFormat(_same)

#: Money for views written by `ledger_kernel.wire.codec` (HTTP, envelope, projection documents):
#: the exact number pre-serialized once per amount, the bytes the codec's `default` would write.
JSON_MONEY = MoneyFormat(decimal_fragment)


#: How the views write a timestamp: ISO 8601 text by default; a serializer that writes
#: datetimes itself as the same text (orjson does) passes `NATIVE_DATETIMES` and skips the
#: per-value ``isoformat`` call, a visible share of a view's cost.
Timestamps = Callable[[datetime], Any]
ISO_DATETIMES: Timestamps = datetime.isoformat


def _native(value: datetime) -> datetime:
    return value


NATIVE_DATETIMES: Timestamps = _native


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _quantities(lines: tuple[QuantityLine, ...]) -> list[dict[str, Any]]:
    return [{"line_id": q.line_id, "quantity": q.quantity} for q in lines]


def address_part(a: Address | None) -> dict[str, Any] | None:
    # ``model_dump()``'s keys, order and values (a flat, closed model of plain values keeps
    # exactly its fields, in order, in ``__dict__``; a test checks it), without pydantic's
    # per-call overhead.
    return None if a is None else dict(a.__dict__)


#: The order view's field table: its keys, part by part, in the order `order_to_json` writes
#: them. Each part is made from one slice of `Order`, and `evolve` keeps a slice the *same
#: object* until an event replaces it, so the relay's memoised writer (`ledger.relay.orderview`)
#: re-serializes a part only when its slice changed. Both writers build every part with the
#: `*_part` functions below, so a field added here and there reaches the HTTP API, the
#: projections and the Kafka envelope alike (a test checks `order_to_json` against this table).
VIEW_PARTS: dict[str, tuple[str, ...]] = {
    "identity": ("id", "external_id", "source"),
    "state": ("version", "status", "payment_status", "fulfillment_status"),
    "currency": ("currency",),
    "customer": ("profile_id", "email", "phone", "first_name", "last_name"),
    "amounts": ("subtotal", "discount", "tax", "shipping", "total", "adjustment", "tax_included"),
    "details": (
        "discount_code",
        "discount_type",
        "payment_method",
        "shipping_method",
        "billing_address",
        "shipping_address",
        "tags",
        "note",
    ),
    "items": ("items",),
    "payments": ("payments",),
    "shipments": ("shipments",),
    "restocks": ("restocks",),
    "transactions": ("transactions",),
    "cancel": ("canceled_at", "cancel_reason", "deleted", "deleted_at"),
    "timestamps": ("created_at", "updated_at"),
}
VIEW_KEYS: tuple[str, ...] = tuple(key for keys in VIEW_PARTS.values() for key in keys)


def order_to_json(
    order: Order, *, money: MoneyFormat = DECIMAL_MONEY, timestamps: Timestamps = ISO_DATETIMES
) -> dict[str, Any]:
    """The order's JSON view (keys: `VIEW_KEYS`); money as exact Decimals (or as ``money`` writes
    it), timestamps as ISO 8601 text (or as ``timestamps`` writes them)."""
    ts = timestamps
    cur = order.currency
    major = money.major(cur)
    details = order.details
    order_id = str(order.id)
    view: dict[str, Any] = {
        "id": order_id,
        "external_id": order.external_id,
        "source": order.source,
        "version": order.version,
        "status": order.status,
        "payment_status": payment_status(order),
        "fulfillment_status": fulfillment_status(order),
        "currency": cur,
    }
    view.update(customer_part(details.customer))
    view.update(amounts_part(order.amounts, major))
    view.update(details_part(details))
    view["items"] = items_part(order.lines, major)
    view["payments"] = payments_part(order.payments, major, ts)
    view["shipments"] = shipments_part(order.shipments, ts)
    view["restocks"] = restocks_part(order.restocks, ts)
    view["transactions"] = transactions_part(order, major, order_id, ts)
    view.update(cancel_part(order.canceled_at, order.cancel_reason, order.deleted_at, ts))
    view["created_at"] = ts(order.created_at)
    view["updated_at"] = ts(order.updated_at)
    return view


def customer_part(customer: Customer) -> dict[str, Any]:
    """The "customer" part: the model's fields are the view's keys (a flat, closed model keeps
    exactly its fields, in order, in ``__dict__``; checked at import), read without pydantic's
    per-attribute overhead."""
    return dict(customer.__dict__)


def amounts_part(amounts: Amounts, major: Major) -> dict[str, Any]:
    """The "amounts" part."""
    fields = amounts.__dict__
    return {
        "subtotal": major(fields["subtotal"]),
        "discount": major(fields["discount"]),
        "tax": major(fields["tax"]),
        "shipping": major(fields["shipping"]),
        "total": major(fields["total"]),
        "adjustment": major(amounts.adjustment),
        "tax_included": fields["tax_included"],
    }


def details_part(details: OrderDetails) -> dict[str, Any]:
    """The "details" part (the customer is its own part)."""
    fields = details.__dict__
    return {
        "discount_code": fields["discount_code"],
        "discount_type": fields["discount_type"],
        "payment_method": fields["payment_method"],
        "shipping_method": fields["shipping_method"],
        "billing_address": address_part(fields["billing_address"]),
        "shipping_address": address_part(fields["shipping_address"]),
        "tags": list(fields["tags"]),
        "note": fields["note"],
    }


def cancel_part(
    canceled_at: datetime | None, cancel_reason: str | None, deleted_at: datetime | None, ts: Timestamps
) -> dict[str, Any]:
    """The "cancel" part."""
    return {
        "canceled_at": None if canceled_at is None else ts(canceled_at),
        "cancel_reason": cancel_reason,
        "deleted": deleted_at is not None,
        "deleted_at": None if deleted_at is None else ts(deleted_at),
    }


def items_part(lines: tuple[LineItem, ...], major: Major) -> list[dict[str, Any]]:
    return [_line_to_json(line, major) for line in lines]


def payments_part(payments: Payments, major: Major, ts: Timestamps = ISO_DATETIMES) -> dict[str, Any]:
    return {
        "authorized": major(payments.authorized),
        "captured": major(payments.captured),
        "refunded": major(payments.refunded),
        "voided": major(payments.voided),
        "entries": [
            {
                "kind": e.kind,
                "amount": major(e.amount),
                "method": e.method,
                "reference": e.reference,
                "at": ts(e.at),
            }
            for e in payments.entries
        ],
    }


def shipments_part(shipments: tuple[Shipment, ...], ts: Timestamps = ISO_DATETIMES) -> list[dict[str, Any]]:
    return [
        {
            "shipment_id": s.shipment_id,
            "lines": _quantities(s.lines),
            "carrier": s.carrier,
            "tracking_code": s.tracking_code,
            "tracking_url": s.tracking_url,
            "location_id": s.location_id,
            "dispatched_at": ts(s.dispatched_at),
            "delivered_at": None if s.delivered_at is None else ts(s.delivered_at),
        }
        for s in shipments
    ]


def restocks_part(restocks: tuple[Restock, ...], ts: Timestamps = ISO_DATETIMES) -> list[dict[str, Any]]:
    return [
        {
            "lines": _quantities(r.lines),
            "location_id": r.location_id,
            "reason": r.reason,
            "at": ts(r.at),
        }
        for r in restocks
    ]


def transactions_part(
    order: Order, major: Major, order_id: str, ts: Timestamps = ISO_DATETIMES
) -> list[dict[str, Any]]:
    if not order.shipments:  # no shipment, no Transaction: skip the derivation
        return []
    return [_transaction_to_json(t, major, order_id, ts) for t in derive_transactions(order)]


def _line_to_json(line: LineItem, major: Major) -> dict[str, Any]:
    # The keys and order of ``line.model_dump()`` with ``variant_id`` renamed (moved to the end)
    # and ``value`` added. Built from a copy of the model's ``__dict__`` (its fields, in order:
    # a closed, flat model) with the non-plain values replaced in place: ~30% cheaper than
    # spelling out every key, and model_dump was most of the view's cost.
    view = dict(line.__dict__)
    view["price_sell"] = major(line.price_sell)
    view["price_current"] = major(line.price_current)
    view["price_original"] = major(line.price_original)
    view["discount"] = major(line.discount)
    view["tax"] = major(line.tax)
    view["categories"] = list(line.categories)
    view["tags"] = list(line.tags)
    view["product_variant_id"] = view.pop("variant_id")
    view["value"] = major(line.price_sell * line.quantity)
    return view


def transaction_to_json(
    tx: Transaction, *, money: MoneyFormat = DECIMAL_MONEY, timestamps: Timestamps = ISO_DATETIMES
) -> dict[str, Any]:
    """A Transaction's JSON view; money and timestamps as in :func:`order_to_json`."""
    return _transaction_to_json(tx, money.major(tx.currency), str(tx.order_id), timestamps)


def _transaction_to_json(tx: Transaction, major: Major, order_id: str, ts: Timestamps) -> dict[str, Any]:
    return {
        "external_id": tx.external_id,
        "order_id": order_id,
        "order_external_id": tx.order_external_id,
        "shipment_id": tx.shipment_id,
        "sequence": tx.sequence,
        "currency": tx.currency,
        "items": [
            {
                "line_id": t.line_id,
                "name": t.name,
                "sku": t.sku,
                "product_id": t.product_id,
                "product_variant_id": t.variant_id,
                "quantity": t.quantity,
                "price_sell": major(t.price_sell),
                "value": major(t.value),
            }
            for t in tx.lines
        ],
        "lines_total": major(tx.lines_total),
        "order_amounts_share": major(tx.order_amounts_share),
        "total": major(tx.total),
        "location_id": tx.location_id,
        "dispatched_at": ts(tx.dispatched_at),
        "transacted_at": ts(tx.transacted_at),
        "voided": tx.voided,
    }


def _minor(value: Any, currency: str) -> int:
    if isinstance(value, float):
        value = repr(value)
    return to_minor(value, currency)


def order_from_json(data: dict[str, Any]) -> Order:
    """Rebuild the Order from :func:`order_to_json`'s output (possibly after a JSON round trip)."""
    cur = data["currency"]
    payments = data["payments"]
    entries = tuple(
        PaymentEntry(
            e["kind"], _minor(e["amount"], cur), e["method"], e["reference"], datetime.fromisoformat(e["at"])
        )
        for e in payments["entries"]
    )
    sums = {
        kind: sum(e.amount for e in entries if e.kind == kind)
        for kind in ("authorized", "captured", "refunded", "voided")
    }
    lines = []
    for item in data["items"]:
        fields = {k: v for k, v in item.items() if k not in ("value", "product_variant_id")}
        fields["variant_id"] = item["product_variant_id"]
        for name in _LINE_MONEY:
            fields[name] = _minor(item[name], cur)
        lines.append(LineItem.model_validate(fields))
    address = {
        name: None if data[name] is None else Address.model_validate(data[name])
        for name in ("billing_address", "shipping_address")
    }
    return Order(
        id=UUID(data["id"]),
        external_id=data["external_id"],
        source=data["source"],
        currency=cur,
        status=data["status"],
        details=OrderDetails(
            customer=Customer(
                **{k: data[k] for k in ("profile_id", "email", "phone", "first_name", "last_name")}
            ),
            payment_method=data["payment_method"],
            shipping_method=data["shipping_method"],
            discount_code=data["discount_code"],
            discount_type=data["discount_type"],
            tags=tuple(data["tags"]),
            note=data["note"],
            **address,
        ),
        lines=tuple(lines),
        amounts=Amounts(tax_included=data["tax_included"], **{n: _minor(data[n], cur) for n in _AMOUNTS}),
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        version=data["version"],
        payments=Payments(entries=entries, **sums),
        shipments=tuple(
            Shipment(
                s["shipment_id"],
                tuple(QuantityLine(**q) for q in s["lines"]),
                s["carrier"],
                s["tracking_code"],
                s["tracking_url"],
                s["location_id"],
                datetime.fromisoformat(s["dispatched_at"]),
                _dt(s["delivered_at"]),
            )
            for s in data["shipments"]
        ),
        restocks=tuple(
            Restock(
                tuple(QuantityLine(**q) for q in r["lines"]),
                r["location_id"],
                r["reason"],
                datetime.fromisoformat(r["at"]),
            )
            for r in data["restocks"]
        ),
        canceled_at=_dt(data["canceled_at"]),
        cancel_reason=data["cancel_reason"],
        deleted_at=_dt(data["deleted_at"]),
    )


if tuple(Customer.model_fields) != VIEW_PARTS["customer"]:  # pragma: no cover - guards `customer_part`
    raise ImportError("Customer's fields changed: update VIEW_PARTS['customer']")

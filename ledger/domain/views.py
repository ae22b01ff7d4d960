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

from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from ledger.domain.money import to_major, to_minor
from ledger.domain.state import Order, PaymentEntry, Payments, Restock, Shipment
from ledger.domain.statuses import fulfillment_status, payment_status
from ledger.domain.transactions import Transaction, derive_transactions
from ledger.domain.values import Address, Amounts, Customer, LineItem, OrderDetails, QuantityLine

__all__ = ["order_from_json", "order_to_json", "transaction_to_json"]

_LINE_MONEY = ("price_sell", "price_current", "price_original", "discount", "tax")
_AMOUNTS = ("subtotal", "discount", "tax", "shipping", "total")


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _quantities(lines: tuple[QuantityLine, ...]) -> list[dict[str, Any]]:
    return [{"line_id": q.line_id, "quantity": q.quantity} for q in lines]


def order_to_json(order: Order) -> dict[str, Any]:
    cur = order.currency

    def major(minor: int) -> Decimal:
        return to_major(minor, cur)

    customer = order.customer
    amounts = order.amounts
    return {
        "id": str(order.id),
        "external_id": order.external_id,
        "source": order.source,
        "version": order.version,
        "status": order.status,
        "payment_status": payment_status(order),
        "fulfillment_status": fulfillment_status(order),
        "currency": cur,
        "profile_id": customer.profile_id,
        "email": customer.email,
        "phone": customer.phone,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        **{name: major(getattr(amounts, name)) for name in _AMOUNTS},
        "adjustment": major(amounts.adjustment),
        "tax_included": amounts.tax_included,
        "discount_code": order.discount_code,
        "discount_type": order.discount_type,
        "payment_method": order.payment_method,
        "shipping_method": order.shipping_method,
        "billing_address": None if order.billing_address is None else order.billing_address.model_dump(),
        "shipping_address": None if order.shipping_address is None else order.shipping_address.model_dump(),
        "tags": list(order.tags),
        "note": order.note,
        "items": [_line_to_json(line, major) for line in order.lines],
        "payments": {
            "authorized": major(order.authorized),
            "captured": major(order.captured),
            "refunded": major(order.refunded),
            "voided": major(order.voided),
            "entries": [
                {
                    "kind": e.kind,
                    "amount": major(e.amount),
                    "method": e.method,
                    "reference": e.reference,
                    "at": _ts(e.at),
                }
                for e in order.payments.entries
            ],
        },
        "shipments": [
            {
                "shipment_id": s.shipment_id,
                "lines": _quantities(s.lines),
                "carrier": s.carrier,
                "tracking_code": s.tracking_code,
                "tracking_url": s.tracking_url,
                "location_id": s.location_id,
                "dispatched_at": _ts(s.dispatched_at),
                "delivered_at": _ts(s.delivered_at),
            }
            for s in order.shipments
        ],
        "restocks": [
            {"lines": _quantities(r.lines), "location_id": r.location_id, "reason": r.reason, "at": _ts(r.at)}
            for r in order.restocks
        ],
        "transactions": [transaction_to_json(t) for t in derive_transactions(order)],
        "canceled_at": _ts(order.canceled_at),
        "cancel_reason": order.cancel_reason,
        "deleted": order.deleted,
        "deleted_at": _ts(order.deleted_at),
        "created_at": _ts(order.created_at),
        "updated_at": _ts(order.updated_at),
    }


def _line_to_json(line: LineItem, major: Any) -> dict[str, Any]:
    out = line.model_dump()
    out["product_variant_id"] = out.pop("variant_id")
    out["categories"] = list(line.categories)
    out["tags"] = list(line.tags)
    for name in _LINE_MONEY:
        out[name] = major(out[name])
    out["value"] = major(line.value)
    return out


def transaction_to_json(tx: Transaction) -> dict[str, Any]:
    def major(minor: int) -> Decimal:
        return to_major(minor, tx.currency)

    return {
        "external_id": tx.external_id,
        "order_id": str(tx.order_id),
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
        "dispatched_at": _ts(tx.dispatched_at),
        "transacted_at": _ts(tx.transacted_at),
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

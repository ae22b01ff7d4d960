"""The envelope's `order` bytes, re-serializing only the parts of the order an event changed.

`evolve` copies the order with `_replace`, so a part an event did not touch (lines, details,
amounts, payments, shipments, restocks) is the *same object* in the new state. `OrderJSON`
remembers, per order, the JSON of each part together with the object it was made from, and
re-serializes a part only when the state holds a different object: a status change rebuilds
a handful of scalars instead of the whole view (the view was most of the relay's per-event CPU).
The top level too is serialized only when a part changed, split around the few keys that change
with every event (status, version, ...), whose values are then joined in (see `OrderJSON`).

The bytes are exactly `dumps_canonical(order_to_json(order, money=JSON_MONEY))`: the same
`ledger.domain.views` helpers build each part, every part is serialized with sorted keys, and
the top-level keys are written in sorted order (tests compare both over random order histories).
Identity is a safe key because every part is immutable; a memo never outlives its order's entry
in the relay's cache, and a re-fold starts a fresh memo.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson

from ledger.domain.state import NO_PAYMENTS, Order
from ledger.domain.statuses import fulfillment_status, payment_status
from ledger.domain.values import Amounts, Customer, OrderDetails
from ledger.domain.views import (
    JSON_MONEY,
    Major,
    _address,
    _items,
    _payments,
    _restocks,
    _shipments,
    _transactions,
)
from ledger_kernel.wire.codec import dumps_canonical

__all__ = ["KEYS", "OrderJSON"]

_NO_PART = object()  # "nothing serialized yet": never the identity of a real part

#: `order_to_json`'s keys in sorted order: the memo's dict keeps them in that order, so it is
#: serialized without sorting (a test checks this against `order_to_json`).
KEYS = (
    "adjustment",
    "billing_address",
    "cancel_reason",
    "canceled_at",
    "created_at",
    "currency",
    "deleted",
    "deleted_at",
    "discount",
    "discount_code",
    "discount_type",
    "email",
    "external_id",
    "first_name",
    "fulfillment_status",
    "id",
    "items",
    "last_name",
    "note",
    "payment_method",
    "payment_status",
    "payments",
    "phone",
    "profile_id",
    "restocks",
    "shipments",
    "shipping",
    "shipping_address",
    "shipping_method",
    "source",
    "status",
    "subtotal",
    "tags",
    "tax",
    "tax_included",
    "total",
    "transactions",
    "updated_at",
    "version",
)


def _fragment(value: Any) -> orjson.Fragment:
    """A part's JSON, kept for the order's life: copied to its exact size, because orjson's
    result holds a buffer of at least 4 KiB however short the text (measured: ~32 KiB a memo)."""
    return orjson.Fragment(bytes(memoryview(dumps_canonical(value))))


#: Stands for a per-event value in the serialized view: a NUL byte never occurs in JSON text
#: (orjson escapes it in strings, and every fragment is orjson's JSON), so the view's bytes split
#: at these into the parts that stay the same between events.
_MARK = orjson.Fragment(b"\x00")
#: The view's keys that (may) change with every event, in their sorted order.
_PER_EVENT = ("fulfillment_status", "status", "updated_at", "version")


#: A new order's top-level dict before its first state: copying it clones the key table
#: (~0.3 us) where inserting the keys one by one cost ~1.3 us an order. The per-event keys
#: hold `_MARK` for good.
_BLANK = dict.fromkeys(KEYS) | dict.fromkeys(_PER_EVENT, _MARK)

#: `[]`, the JSON of the parts most orders hold empty (tags, transactions): shared.
_EMPTY_LIST = orjson.Fragment(b"[]")


def _list_fragment(value: list[Any]) -> orjson.Fragment:
    """`_fragment(value)`, without a serialization and a copy when the list is empty."""
    return _fragment(value) if value else _EMPTY_LIST


def _iso(value: datetime) -> datetime | orjson.Fragment | str:
    """`value.isoformat()` as JSON: left to orjson for UTC datetimes (the store's), serialized by
    orjson (~4x faster than `isoformat`, measured 0.3 vs 1.3 us) for any offset of whole minutes
    (pydantic's own tzinfo from event data), where its text equals `isoformat`'s; `isoformat`
    only for offsets with seconds, which orjson rounds away (a test compares both)."""
    if value.tzinfo is UTC:
        return value
    offset = value.utcoffset()
    if offset is not None and not offset.seconds % 60 and not offset.microseconds:
        return orjson.Fragment(orjson.dumps(value))
    return value.isoformat()


#: The JSON of the parts every new order starts with (no payments, shipments or restocks: the
#: fold shares one empty object of each), made once by the same helpers instead of once per
#: order: measured 3.3 + 1.8 + 1.8 us of the 28-35 us of an order's first view.
_NO_SHIPMENTS = _fragment(_shipments(()))
_NO_RESTOCKS = _fragment(_restocks(()))
_NO_PAYMENTS_IN: dict[str, orjson.Fragment] = {}  # by currency (money has its decimals)


def _no_payments(currency: str, major: Major) -> orjson.Fragment:
    fragment = _NO_PAYMENTS_IN.get(currency)
    if fragment is None:
        fragment = _NO_PAYMENTS_IN[currency] = _fragment(_payments(NO_PAYMENTS, major))
    return fragment


class OrderJSON:
    """Memo of one order's view; `dumps(order)` for each successive state of that order.

    The view is serialized whole only when one of its parts changed (`_pieces`: its bytes split
    around the per-event keys); otherwise only the per-event values are serialized and joined
    with the pieces. Serializing the whole ~40-key view was ~70% of a status change's JSON work.
    """

    __slots__ = (
        "_amounts_of",
        "_cancel_of",
        "_details_of",
        "_fixed_of",
        "_lines_of",
        "_major",
        "_order_key",
        "_payments_of",
        "_pieces",
        "_restocks_of",
        "_shipments_of",
        "_top",
    )

    def __init__(self) -> None:
        self._fixed_of: tuple[Any, ...] = ()
        self._top: dict[str, Any] = {}
        self._major: Major = _no_major
        self._order_key = ""
        self._pieces: tuple[bytes, ...] = ()
        self._forget_parts()

    def _forget_parts(self) -> None:
        self._details_of: object = _NO_PART
        self._amounts_of: object = _NO_PART
        self._lines_of: object = _NO_PART
        self._payments_of: object = _NO_PART
        self._shipments_of: object = _NO_PART
        self._restocks_of: object = _NO_PART
        self._cancel_of: tuple[Any, ...] = (_NO_PART, _NO_PART, _NO_PART)

    def _reset(self, order: Order, fixed_of: tuple[Any, ...]) -> None:
        """Start over for the first state: the parts set once per order, the rest still to fill.

        The id is left to orjson when it is a plain `UUID` (the same canonical text as `str`,
        without the ~0.8 us Python-level `UUID.__str__`); its text is made only for Transactions.
        """
        self._forget_parts()
        self._fixed_of = fixed_of
        self._major = JSON_MONEY.major(order.currency)
        self._order_key = ""
        self._top = top = dict(_BLANK)
        order_id = order.id
        top["created_at"] = _iso(order.created_at)
        top["currency"] = order.currency
        top["external_id"] = order.external_id
        top["id"] = order_id if type(order_id) is UUID else str(order_id)
        top["source"] = order.source

    def dumps(self, order: Order) -> bytes:
        """`dumps_canonical(order_to_json(order, money=JSON_MONEY))`, from the memo where it can."""
        # One unpacking instead of a lookup per field (the layout is checked at import).
        (
            order_id, external_id, source, currency, status, _, _, _, created_at,
            updated_at, version, _, _, _, canceled_at, cancel_reason, deleted_at,
        ) = order  # fmt: skip
        fixed_of = (order_id, external_id, source, currency, created_at)
        if fixed_of != self._fixed_of:  # the first state (these never change afterwards)
            self._reset(order, fixed_of)
        changed = self._update_parts(order)
        cancel_of = self._cancel_of  # by identity, like the parts: equal datetimes may differ in text
        if (
            canceled_at is not cancel_of[0]
            or cancel_reason is not cancel_of[1]
            or deleted_at is not cancel_of[2]
        ):
            _put_cancel(self._top, canceled_at, cancel_reason, deleted_at)
            self._cancel_of = (canceled_at, cancel_reason, deleted_at)
            changed = True
        if changed:
            self._pieces = tuple(orjson.dumps(self._top).split(b"\x00"))
        first, after_fulfillment, after_status, after_updated, last = self._pieces
        fulfillment = fulfillment_status(order)
        return b"".join(
            (
                first,
                _STRINGS.get(fulfillment) or _json_string(fulfillment),
                after_fulfillment,
                _STRINGS.get(status) or _json_string(status),
                after_status,
                orjson.dumps(updated_at if updated_at.tzinfo is UTC else _iso(updated_at)),
                after_updated,
                str(version).encode(),
                last,
            )
        )

    def _update_parts(self, order: Order) -> bool:
        """Re-serialize the parts whose object changed (identity); True if any did."""
        details, lines, amounts = order[5:8]  # the layout is checked at import
        payments, shipments, restocks = order[11:14]
        if (
            details is self._details_of
            and lines is self._lines_of
            and amounts is self._amounts_of
            and payments is self._payments_of
            and shipments is self._shipments_of
            and restocks is self._restocks_of
        ):  # the common case (a status change): nothing to re-serialize
            return False
        top = self._top
        major = self._major
        changed = False
        money_changed = False  # lines, amounts, payments or shipments: Transactions may change
        if details is not self._details_of:
            _put_details(top, details)
            self._details_of = details
            changed = True
        if amounts is not self._amounts_of:
            _put_amounts(top, amounts, major)
            self._amounts_of = amounts
            money_changed = True
        if lines is not self._lines_of:
            top["items"] = _fragment(_items(lines, major))
            self._lines_of = lines
            money_changed = True
        if payments is not self._payments_of:
            top["payments"] = (
                _no_payments(order.currency, major)
                if payments is NO_PAYMENTS
                else _fragment(_payments(payments, major))
            )
            self._payments_of = payments
            money_changed = True
        if shipments is not self._shipments_of:
            top["shipments"] = _fragment(_shipments(shipments)) if shipments else _NO_SHIPMENTS
            self._shipments_of = shipments
            money_changed = True
        if restocks is not self._restocks_of:
            top["restocks"] = _fragment(_restocks(restocks)) if restocks else _NO_RESTOCKS
            self._restocks_of = restocks
            changed = True
        if money_changed:
            top["transactions"] = self._transactions(order, major)
            top["payment_status"] = payment_status(order)
        return changed or money_changed

    def _transactions(self, order: Order, major: Major) -> orjson.Fragment:
        """The Transactions part; none without a shipment (`_transactions` returns `[]` then
        without reading the order id, so the id's text is only made for shipped orders)."""
        if not order.shipments:
            return _EMPTY_LIST
        if not self._order_key:
            self._order_key = str(order.id)
        return _list_fragment(_transactions(order, major, self._order_key))


def _put_cancel(
    top: dict[str, Any], canceled_at: datetime | None, cancel_reason: str | None, deleted_at: datetime | None
) -> None:
    top["canceled_at"] = None if canceled_at is None else _iso(canceled_at)
    top["cancel_reason"] = cancel_reason
    top["deleted"] = deleted_at is not None
    top["deleted_at"] = None if deleted_at is None else _iso(deleted_at)


#: JSON strings of the statuses seen (the view's statuses: few distinct values), bounded.
_STRINGS: dict[str, bytes] = {}


def _json_string(value: str) -> bytes:
    """`orjson.dumps(value)`, memoized: a status is written with every event."""
    text = _STRINGS.get(value)
    if text is None:
        if len(_STRINGS) >= 4096:
            _STRINGS.clear()
        text = _STRINGS[value] = orjson.dumps(value)
    return text


def _no_major(minor: int) -> Any:
    raise AssertionError("OrderJSON used before its first state")


def _put_details(top: dict[str, Any], details: OrderDetails) -> None:
    """The view's keys from the details: the customer's fields are the view's keys of the same
    names (checked at import), copied in one `update`; the rest read from the model's `__dict__`
    (a frozen, closed model: its fields), saving a pydantic attribute lookup per key."""
    top.update(details.customer.__dict__)
    fields = details.__dict__
    billing = _address(fields["billing_address"])
    shipping = _address(fields["shipping_address"])
    top["discount_code"] = fields["discount_code"]
    top["discount_type"] = fields["discount_type"]
    top["payment_method"] = fields["payment_method"]
    top["shipping_method"] = fields["shipping_method"]
    top["billing_address"] = None if billing is None else _fragment(billing)
    top["shipping_address"] = None if shipping is None else _fragment(shipping)
    top["tags"] = _list_fragment(list(fields["tags"]))
    top["note"] = fields["note"]


def _put_amounts(top: dict[str, Any], amounts: Amounts, major: Major) -> None:
    fields = amounts.__dict__
    top["subtotal"] = major(fields["subtotal"])
    top["discount"] = major(fields["discount"])
    top["tax"] = major(fields["tax"])
    top["shipping"] = major(fields["shipping"])
    top["total"] = major(fields["total"])
    top["adjustment"] = major(amounts.adjustment)
    top["tax_included"] = fields["tax_included"]


# What `view` and `_put_details` rely on: fail at import, not with wrong bytes, when they change.
_ORDER_LAYOUT = (
    "id", "external_id", "source", "currency", "status", "details", "lines", "amounts", "created_at",
    "updated_at", "version", "payments", "shipments", "restocks", "canceled_at", "cancel_reason", "deleted_at",
)  # fmt: skip
if Order._fields != _ORDER_LAYOUT:  # pragma: no cover - guards the unpacking in `view`
    raise ImportError("Order's fields changed: update OrderJSON.view's unpacking")
if tuple(Customer.model_fields) != (
    "profile_id",
    "email",
    "phone",
    "first_name",
    "last_name",
):  # pragma: no cover
    raise ImportError("Customer's fields changed: update orderview._put_details")

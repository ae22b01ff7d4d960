"""Ledger envelope -> Omnisend calls (docs/connectors.md#omnisend-v3-orders, #omnisend-events, #mapping), as pure functions.

Orders mode (v3, the default): the whole order is recomputed from the state after the event;
POST creates, PUT replaces (full body, never partial: PUT wipes what it does not carry), PATCH
carries status/tracking-only changes, DELETE for tombstones. Because every body is a snapshot,
several pending events of one order coalesce into one call with the latest state (`map_batch`).
`sent` holds digests of what the destination already has, so a no-op event sends nothing.

Events mode (Omnisend API 2026-03-15, `/api/events`): one recommended event per ledger event that means something to Omnisend flows;
a deterministic `eventID` (UUIDv5 of the ledger event id) so historical loads dedupe. Events are
not coalesced: each one can drive an automation.

Money: v3 amounts are integer cents, i.e. hundredths of the major unit whatever the currency's
exponent (JPY 1000 -> 100000; KWD 1.2345... rounded half-even to 2 decimals, noted as lossy).
Events get decimal major units. At most `max_products` products are sent (first N in line
order, order sums unchanged) and the truncation is recorded in the call's notes (F22).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from consumers.fanout.applicability import NotApplicable
from consumers.fanout.countries import CountryFormat, convert_country
from consumers.fanout.mapping_types import DestinationCall, Envelope
from consumers.omnisend.phones import normalise_phone
from ledger.domain.money import exponent, to_major
from ledger.domain.state import Order
from ledger.domain.statuses import fulfillment_status, payment_status
from ledger.domain.values import Address, LineItem

__all__ = [
    "NO_CONTACT",
    "MappedOrder",
    "OmnisendOptions",
    "OmnisendState",
    "cents",
    "map_batch",
    "map_event",
    "map_order",
    "not_applicable",
    "order_body",
]

ORDERS = "/v3/orders"
CATEGORIES = "/v3/categories"
CATEGORY_SEPARATOR = ">"
"""A producer's category given as a path ("Clothing > Coats") names its parents too."""
EVENTS = "/api/events"
"""Omnisend's 2026-03-15 events endpoint (the v5 one is its predecessor)."""
OrderNumberType = Literal["string", "integer"]
EVENT_NAMESPACE = uuid.UUID("6f1f2b6e-6b3a-5d1e-9a51-0f2d8e0c4a11")
PATCH_EVENT_TYPES = frozenset(
    {
        "OrderStatusChanged",
        "PaymentAuthorized",
        "PaymentCaptured",
        "PaymentRefunded",
        "PaymentVoided",
        "ShipmentDispatched",
        "ShipmentDelivered",
        "ItemsRestocked",
        "OrderCanceled",
    }
)
_PATCH_FIELDS = ("paymentStatus", "fulfillmentStatus", "trackingCode", "courierTitle", "courierUrl")
_DISCOUNT_TYPES = frozenset({"percentage", "fixedAmount", "freeShipping"})
_NOT_DIGITS = re.compile(r"\D")
EVENT_PHONE_MAX = 15
"""Omnisend's events API refuses a contact phone longer than this (docs/connectors.md)."""
EVENT_NAME_MAX = 50
"""...and a contact first or last name longer than this: names are cut to fit, not refused."""


NO_CONTACT = NotApplicable(
    "no_contact",
    "Omnisend needs an email or a phone to attach the order to a contact; the order has neither",
)


def not_applicable(order: Order) -> NotApplicable | None:
    """Why Omnisend cannot take this order, or None when it can.

    v3 `POST /orders` requires one of `email`, `phone`, `contactID` (the ledger knows no
    Omnisend contact id) and an event's `contact` needs an email, a phone or an id, so an
    order with neither email nor phone has nowhere to go. A deleted order is never refused:
    its mapping decides (nothing to delete if Omnisend never had it).
    """
    if order.deleted or order.customer.email or order.customer.phone:
        return None
    return NO_CONTACT


@dataclass(frozen=True, slots=True)
class OmnisendOptions:
    """Mapping choices that are settings (`settings.omnisend.mode`, country format, product cap).

    `country_format` defaults to the seed's alpha-3; `settings.omnisend.country_code_format`
    selects alpha-2, which Omnisend's published v3 spec and its own WooCommerce plugin use.
    `order_number` (v3 `orderNumber`) defaults to the seed's string; `integer` sends its digits,
    as the vendor's v3 spec types it (`settings.omnisend.order_number_type`).
    """

    mode: Literal["orders", "events"] = "orders"
    country_format: CountryFormat = "alpha3"
    order_number: OrderNumberType = "string"
    max_products: int = 500


@dataclass(frozen=True, slots=True)
class OmnisendState:
    """What the destination already has for this order (from delivery state), and which
    product categories it already has (for every order: `consumers.fanout.categories`)."""

    exists: bool = False
    sent: Mapping[str, str] = field(default_factory=dict)
    categories: frozenset[str] | set[str] = frozenset()


def digest(value: Any) -> str:
    """Stable short hash of a JSON-able body (Decimals by their exact text)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cents(minor: int, currency: str) -> tuple[int, bool]:
    """Minor units -> Omnisend cents (hundredths of the major unit); the flag says it was rounded."""
    exp = exponent(currency)
    if exp <= 2:
        return minor * 10 ** (2 - exp), False
    exact = Decimal(minor).scaleb(2 - exp)
    rounded = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return rounded, Decimal(rounded) != exact


def _iso(dt: Any) -> str:
    text: str = dt.isoformat()
    return text.replace("+00:00", "Z")


def _v3_order_number(order: Order, kind: OrderNumberType) -> str | int | None:
    """v3 `orderNumber`: the producer's number as given (seed), or its digits (vendor spec)."""
    if kind == "integer":
        return _order_number(order)
    return order.external_id or None


def _order_number(order: Order) -> int | None:
    """A numeric orderNumber (events; v3 when set so): the digits of the producer's number, if any."""
    digits = _NOT_DIGITS.sub("", order.external_id or "")
    return int(digits[:18]) if digits else None


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    """Drop None and empty values: the vendor schema types them, it does not accept null."""
    return {k: v for k, v in body.items() if v is not None and v not in ([], "")}


def _region(order: Order) -> str | None:
    """The country a phone without a +prefix belongs to: the billing address's, else shipping's."""
    for address in (order.billing_address, order.shipping_address):
        if address is not None and address.country_code:
            return address.country_code
    return None


def _phone(raw: str | None, region: str | None, name: str, dropped: list[str], **limit: int) -> str | None:
    phone = normalise_phone(raw, region, **limit)
    if phone.dropped:
        dropped.append(name)
    return phone.e164


def _address_v3(
    address: Address | None, fmt: CountryFormat, name: str, dropped: list[str]
) -> dict[str, Any] | None:
    if address is None:
        return None
    out = _compact(
        {
            "firstName": address.first_name,
            "lastName": address.last_name,
            "company": address.company,
            "phone": _phone(address.phone, address.country_code, f"{name}.phone", dropped),
            "country": address.country,
            "countryCode": convert_country(address.country_code, fmt),
            "state": address.state,
            "stateCode": address.state_code,
            "city": address.city,
            "address": address.address,
            "address2": address.address2,
            "postalCode": address.postal_code,
        }
    )
    return out or None


def category_path(raw: str) -> list[tuple[str, str]]:
    """(categoryID, title) for a category and each parent its path names, parents first.

    "Clothing > Coats" -> [("Clothing", "Clothing"), ("Clothing > Coats", "Coats")]: the id is
    the normalised path (unique however deep), the title the last part. The seed asks for every
    parent's id in `categoryIDs` too.
    """
    parts = [p.strip() for p in raw.split(CATEGORY_SEPARATOR)]
    parts = [p for p in parts if p]
    return [(f" {CATEGORY_SEPARATOR} ".join(parts[: i + 1]), parts[i]) for i in range(len(parts))]


def _category_ids(line: LineItem) -> list[str]:
    ids: dict[str, None] = {}
    for raw in line.categories:
        for category_id, _ in category_path(raw):
            ids.setdefault(category_id)
    return list(ids)


def _unit_price(line: LineItem, tax_included: bool) -> int:
    """The seed's product `price`: the final unit price, discount and taxes included.

    `price_sell` is already after the line's discount; in tax-exclusive markets the line's tax
    is added per unit (rounded half-even to the currency's minor unit).
    """
    if tax_included or not line.tax or line.quantity <= 0:
        return line.price_sell
    per_unit = (Decimal(line.tax) / line.quantity).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return line.price_sell + int(per_unit)


def _product(line: LineItem, currency: str, lossy: list[str], tax_included: bool = True) -> dict[str, Any]:
    price, r1 = cents(_unit_price(line, tax_included), currency)
    discount, r2 = cents(line.discount, currency)
    if r1 or r2:
        lossy.append(line.line_id)
    fallback = line.sku or line.line_id
    return _compact(
        {
            "productID": str(line.product_id) if line.product_id is not None else fallback,
            "variantID": str(line.variant_id) if line.variant_id is not None else fallback,
            "sku": line.sku,
            "title": line.name,
            "variantTitle": line.variant_title,
            "vendor": line.vendor,
            "weight": line.weight_grams,
            "quantity": line.quantity,
            "price": price,
            "discount": discount or None,
            "imageUrl": line.image_url,
            "productUrl": line.product_url,
            "categoryIDs": _category_ids(line),
            "tags": list(line.tags),
        }
    )


def _tracking(order: Order) -> dict[str, str]:
    """Tracking of the latest shipment that has any (v3 holds one set per order)."""
    for shipment in reversed(order.shipments):
        if shipment.tracking_code or shipment.tracking_url:
            return _compact(
                {
                    "trackingCode": shipment.tracking_code,
                    "courierTitle": shipment.carrier,
                    "courierUrl": shipment.tracking_url,
                }
            )
    return {}


@dataclass(frozen=True, slots=True)
class MappedOrder:
    """A v3 order body, notes on lossy choices, and the fields left out as unusable."""

    body: dict[str, Any]
    notes: tuple[str, ...]
    dropped: tuple[str, ...]


def order_body(
    order: Order, options: OmnisendOptions = OmnisendOptions()
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The full v3 order for POST/PUT, and notes on lossy choices (truncation, rounding)."""
    mapped = map_order(order, options)
    return mapped.body, mapped.notes


def map_order(order: Order, options: OmnisendOptions = OmnisendOptions()) -> MappedOrder:
    """The full v3 order with its notes and dropped fields (phones that are not E.164)."""
    currency = order.currency
    notes: list[str] = []
    dropped: list[str] = []
    lossy: list[str] = []
    amounts = order.amounts
    money: dict[str, int] = {}
    for name, minor in (
        ("orderSum", amounts.total),
        ("subTotalSum", amounts.subtotal),
        ("discountSum", amounts.discount),
        ("taxSum", amounts.tax),
        ("shippingSum", amounts.shipping),
    ):
        money[name], rounded = cents(minor, currency)
        if rounded:
            lossy.append(name)
    lines = order.lines
    if len(lines) > options.max_products:
        notes.append(
            f"products truncated: {len(lines)} lines, first {options.max_products} sent "
            "(Omnisend max per order); order sums unchanged"
        )
        lines = lines[: options.max_products]
    products = [_product(line, currency, lossy, amounts.tax_included) for line in lines]
    if lossy:
        notes.append(f"rounded to cents ({currency} has {exponent(currency)} decimals): {', '.join(lossy)}")
    customer = order.customer
    body = _compact(
        {
            "orderID": str(order.id),
            "orderNumber": _v3_order_number(order, options.order_number),
            "email": customer.email,
            "phone": _phone(customer.phone, _region(order), "phone", dropped),
            "firstName": customer.first_name,
            "lastName": customer.last_name,
            "currency": currency,
            **money,
            "subTotalTaxIncluded": amounts.tax_included,
            "discountCode": order.discount_code,
            "discountType": order.discount_type if order.discount_type in _DISCOUNT_TYPES else None,
            "discountValue": money["discountSum"] if order.discount_type == "fixedAmount" else None,
            "createdAt": _iso(order.created_at),
            "updatedAt": _iso(order.updated_at),
            "paymentMethod": order.payment_method,
            "shippingMethod": order.shipping_method,
            "paymentStatus": payment_status(order),
            "fulfillmentStatus": fulfillment_status(order),
            "canceledDate": _iso(order.canceled_at) if order.canceled_at else None,
            "cancelReason": order.cancel_reason if order.canceled_at else None,
            **_tracking(order),
            "source": order.source,
            "tags": list(order.tags),
            "contactNote": order.note,
            "billingAddress": _address_v3(
                order.billing_address, options.country_format, "billingAddress", dropped
            ),
            "shippingAddress": _address_v3(
                order.shipping_address, options.country_format, "shippingAddress", dropped
            ),
            "products": products,
        }
    )
    return MappedOrder(body, tuple(notes), tuple(dropped))


def _patch_body(full: Mapping[str, Any]) -> dict[str, Any]:
    body = {k: full[k] for k in _PATCH_FIELDS if k in full}
    if "canceledDate" in full:
        body["canceledDate"] = full["canceledDate"]
        if "cancelReason" in full:
            body["cancelReason"] = full["cancelReason"]
    return body


def _without_updated(body: Mapping[str, Any]) -> dict[str, Any]:
    """`updatedAt` moves with every event; it alone is no reason to call."""
    return {k: v for k, v in body.items() if k != "updatedAt"}


ERASED = "PersonalDataErased"
"""The event an erasure appends (docs/privacy.md#destinations): the v3 order is deleted (the
only documented removal); events mode has no delete, so nothing is sent there."""


def _orders_calls(
    last: Envelope, state: OmnisendState, options: OmnisendOptions, *, patch_ok: bool, erased: bool = False
) -> list[DestinationCall]:
    order = last.order
    order_id = str(order.id)
    path = f"{ORDERS}/{order_id}"
    if state.sent.get("order") == "erased":
        return []  # deleted for an erasure: nothing of this order goes to Omnisend again
    if erased:
        if not state.exists:
            return []
        return [DestinationCall("omnisend.order.delete", "DELETE", path, None, order_id, {"order": "erased"})]
    if order.deleted:
        if not state.exists:
            return []
        return [
            DestinationCall("omnisend.order.delete", "DELETE", path, None, order_id, {"order": "deleted"})
        ]
    mapped = map_order(order, options)
    body, notes, dropped = mapped.body, mapped.notes, mapped.dropped
    d = digest(_without_updated(body))
    products = digest(body.get("products"))
    remember = {"order": d, "products": products}
    categories = _category_calls(order, state)
    if not state.exists:
        return [
            *categories,
            DestinationCall(
                "omnisend.order.create", "POST", ORDERS, body, order_id, remember, notes, dropped=dropped
            ),
        ]
    if state.sent.get("order") == d:
        return []
    if patch_ok and state.sent.get("products") == products:
        patch = _patch_body(body)
        return [
            DestinationCall(
                "omnisend.order.patch", "PATCH", path, patch, order_id, remember, notes, body, dropped
            )
        ]
    return [
        *categories,
        DestinationCall(
            "omnisend.order.replace", "PUT", path, body, order_id, remember, notes, body, dropped
        ),
    ]


def _category_calls(order: Order, state: OmnisendState) -> list[DestinationCall]:
    """Create the order's categories Omnisend does not have yet (parents first), before the order."""
    wanted: dict[str, str] = {}
    for line in order.lines:
        for raw in line.categories:
            for category_id, title in category_path(raw):
                if category_id not in state.categories:
                    wanted.setdefault(category_id, title)
    return [
        DestinationCall(
            "omnisend.category.create", "POST", CATEGORIES, {"categoryID": cid, "title": title}, cid
        )
        for cid, title in wanted.items()
    ]


def map_event(
    env: Envelope, state: OmnisendState, options: OmnisendOptions = OmnisendOptions()
) -> list[DestinationCall]:
    """The calls one event causes, given what Omnisend already has."""
    if options.mode == "events":
        return _event_calls(env, state)
    return _orders_calls(
        env, state, options, patch_ok=env.type in PATCH_EVENT_TYPES, erased=env.type == ERASED
    )


def map_batch(
    envs: Sequence[Envelope],
    state: OmnisendState,
    options: OmnisendOptions = OmnisendOptions(),
    *,
    catch_up: bool = False,
) -> list[DestinationCall]:
    """Several pending events of ONE order, oldest first, as few calls as the mode allows.

    Orders mode: one call with the latest state (PATCH only if every event was status/tracking).
    Events mode: each event's own calls, in order (not coalescible: flows fire per event).
    `catch_up`: the order was not applicable until now (no contact), so Omnisend has nothing of
    it; in events mode a `placed order` with the current state goes first (unless one was
    sent before), since the real one was never sendable. Orders mode needs nothing: the
    create carries the whole current order anyway.
    """
    if not envs:
        return []
    if options.mode == "events":
        calls: list[DestinationCall] = []
        sent = dict(state.sent)
        if catch_up and all(env.type != "OrderPlaced" for env in envs):
            envs = [replace(envs[-1], type="OrderPlaced", data={}), *envs]
        for env in envs:
            for call in _event_calls(env, OmnisendState(state.exists, sent)):
                sent.update(call.remember)
                calls.append(call)
        return calls
    patch_ok = all(env.type in PATCH_EVENT_TYPES for env in envs)
    erased = any(env.type == ERASED for env in envs)
    return _orders_calls(envs[-1], state, options, patch_ok=patch_ok, erased=erased)


# -- events mode (2026-03-15) ----------------------------------------------------------------------


def _major(minor: int, currency: str) -> Decimal:
    return to_major(minor, currency)


def _line_v5(line: LineItem, currency: str, quantity: int | None = None) -> dict[str, Any]:
    fallback = line.sku or line.line_id
    return _compact(
        {
            "productID": str(line.product_id) if line.product_id is not None else fallback,
            "productVariantID": str(line.variant_id) if line.variant_id is not None else fallback,
            "productTitle": line.name,
            "productPrice": _major(line.price_sell, currency),
            "productQuantity": line.quantity if quantity is None else quantity,
            "productSKU": line.sku,
            "productDiscount": _major(line.discount, currency) if line.discount else None,
            "productStrikeThroughPrice": _major(line.price_original, currency)
            if line.price_original > line.price_sell
            else None,
            "productImageURL": line.image_url,
            "productURL": line.product_url,
            "productVariantTitle": line.variant_title,
            "productVendor": line.vendor,
            "productWeight": line.weight_grams,
            "productTags": list(line.tags),
            "productCategories": [{"id": c, "title": c} for c in line.categories],
        }
    )


def _address_v5(address: Address | None, name: str, dropped: list[str]) -> dict[str, Any] | None:
    if address is None:
        return None
    return (
        _compact(
            {
                "address1": address.address,
                "address2": address.address2,
                "city": address.city,
                "company": address.company,
                "country": address.country,
                "firstName": address.first_name,
                "lastName": address.last_name,
                "phone": _phone(address.phone, address.country_code, f"{name}.phone", dropped),
                "state": address.state,
                "stateCode": address.state_code,
                "zip": address.postal_code,
            }
        )
        or None
    )


def _properties(order: Order, dropped: list[str], max_products: int = 500) -> dict[str, Any]:
    c = order.currency
    a = order.amounts
    track = _tracking(order)
    return _compact(
        {
            "orderID": str(order.id),
            "orderNumber": _order_number(order),
            "createdAt": _iso(order.created_at),
            "currency": c,
            "fulfillmentStatus": fulfillment_status(order),
            "paymentStatus": payment_status(order),
            "paymentMethod": order.payment_method,
            "subTotalPrice": _major(a.subtotal, c),
            "subtotalTaxIncluded": a.tax_included,
            "totalDiscount": _major(a.discount, c),
            "totalPrice": _major(a.total, c),
            "totalTax": _major(a.tax, c),
            "shippingPrice": _major(a.shipping, c),
            "shippingMethod": order.shipping_method,
            "note": order.note,
            "tags": list(order.tags),
            "discounts": [{"amount": _major(a.discount, c), "code": order.discount_code}]
            if order.discount_code
            else None,
            "tracking": _compact(
                {
                    "code": track.get("trackingCode"),
                    "courierTitle": track.get("courierTitle"),
                    "courierURL": track.get("courierUrl"),
                }
            )
            or None,
            "cancelReason": order.cancel_reason,
            "billingAddress": _address_v5(order.billing_address, "properties.billingAddress", dropped),
            "shippingAddress": _address_v5(order.shipping_address, "properties.shippingAddress", dropped),
            "lineItems": [_line_v5(line, c) for line in order.lines[:max_products]],
        }
    )


def _event_name(env: Envelope, state: OmnisendState) -> str | None:
    order = env.order
    once = {
        "OrderPlaced": "placed order",
        "OrderCanceled": "order canceled",
    }
    if env.type in once:
        return once[env.type] if f"ev:{once[env.type]}" not in state.sent else None
    if env.type == "PaymentCaptured" and payment_status(order) == "paid":
        return None if "ev:paid for order" in state.sent else "paid for order"
    if env.type in ("ShipmentDispatched", "ShipmentDelivered") and fulfillment_status(order) in (
        "fulfilled",
        "delivered",
    ):
        return None if "ev:order fulfilled" in state.sent else "order fulfilled"
    if env.type == "PaymentRefunded":
        return "order refunded"
    return None


def _event_calls(env: Envelope, state: OmnisendState) -> list[DestinationCall]:
    name = _event_name(env, state)
    if name is None:
        return []
    order = env.order
    dropped: list[str] = []
    notes: list[str] = []
    props = _properties(order, dropped)
    if name == "order refunded":
        amount = int(env.data.get("amount", 0) or 0)
        props["totalRefundedAmount"] = _major(amount, order.currency)
        props["refundedLineItems"] = []
    customer = order.customer
    event_id = str(uuid.uuid5(EVENT_NAMESPACE, f"{env.event_id}:{name}"))
    body = {
        "eventName": name,
        "eventID": event_id,
        "eventTime": _iso(env.recorded_at),
        "eventVersion": "v2",
        "origin": "api",
        "contact": _compact(
            {
                "email": customer.email,
                "phone": _phone(
                    customer.phone, _region(order), "contact.phone", dropped, max_chars=EVENT_PHONE_MAX
                ),
                "firstName": _fit_name(customer.first_name, "firstName", notes),
                "lastName": _fit_name(customer.last_name, "lastName", notes),
            }
        ),
        "properties": props,
    }
    remember = {f"ev:{name}": event_id}
    return [
        DestinationCall(
            "omnisend.event", "POST", EVENTS, body, event_id, remember, tuple(notes), dropped=tuple(dropped)
        )
    ]


def _fit_name(name: str | None, field_name: str, notes: list[str]) -> str | None:
    """A contact name cut to the events API's limit (a shortened name beats a parked order)."""
    if name is None or len(name) <= EVENT_NAME_MAX:
        return name
    notes.append(f"contact.{field_name} cut to {EVENT_NAME_MAX} characters (was {len(name)})")
    return name[:EVENT_NAME_MAX].rstrip()

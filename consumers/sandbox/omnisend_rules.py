"""Omnisend request validation: the vendor's v3 OpenAPI plus the documented rules it misses.

Why both: the spec alone misses a few documented rules (status enums, max 500 products,
uppercase currency, a contact identifier on create), and the seed contradicts the spec on
countryCode (alpha-3 "USA" against the spec's 2 characters), so the spec copy is patched to
the configured format (`settings.omnisend.country_code_format`) and the code must be an
assigned ISO 3166-1 code of that format. Likewise `orderNumber` (seed: string; spec: integer)
is typed as `settings.omnisend.order_number_type` says.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Any

from consumers.fanout.countries import CountryFormat, is_country_code
from consumers.omnisend.mapping import OrderNumberType
from consumers.sandbox.schema import SchemaError, Validator, check_format, is_date_time

PAYMENT_STATUSES = ("awaitingPayment", "partiallyPaid", "paid", "partiallyRefunded", "refunded", "voided")
FULFILLMENT_STATUSES = ("unfulfilled", "inProgress", "fulfilled", "delivered", "restocked")
DISCOUNT_TYPES = ("percentage", "fixedAmount", "freeShipping")
PATCHABLE = frozenset(
    {
        "trackingCode",
        "courierTitle",
        "courierUrl",
        "paymentStatus",
        "fulfillmentStatus",
        "canceledDate",
        "cancelReason",
        "cartID",
    }
)
ORDER_EVENTS = frozenset(
    {"placed order", "paid for order", "order fulfilled", "order canceled", "order refunded"}
)
_EVENT_MONEY = ("totalPrice", "subTotalPrice", "totalDiscount", "totalTax", "shippingPrice")
_LINE_REQUIRED = ("productID", "productVariantID", "productTitle", "productPrice", "productQuantity")
EVENT_NAME_MAX = 50
"""Contact first/last name cap of the events API (docs/connectors.md)."""
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_SPEC_FILE = "omnisend_v3_orders.openapi.json"


def load_spec() -> dict[str, Any]:
    """The vendor's v3 orders OpenAPI (a copy of Omnisend's own spec, shipped with the package)."""
    text = resources.files("consumers.sandbox").joinpath(_SPEC_FILE).read_text(encoding="utf-8")
    spec: dict[str, Any] = json.loads(text)
    return spec


class OmnisendRules:
    """Validates v3 order bodies (POST/PUT/PATCH) and v5 event bodies.

    By default only what Omnisend's published documents enforce: the v3 spec (types, formats,
    required fields; unknown fields allowed, as the spec does not forbid them), a contact
    identifier on create, the configured countryCode format, and the events API's limits.
    `seed_rules` adds the seed's own rules the spec does not state (status and discountType
    enums, at most `max_products` products, uppercase currency): a separate check tests turn on.
    """

    def __init__(
        self,
        *,
        max_products: int = 500,
        country_code_format: CountryFormat = "alpha3",
        order_number_type: OrderNumberType = "string",
        seed_rules: bool = False,
    ) -> None:
        self.max_products = max_products
        self.country_code_format = country_code_format
        self.order_number_type = order_number_type
        self.seed_rules = seed_rules
        length = 3 if country_code_format == "alpha3" else 2
        spec = _patch_country_code(copy.deepcopy(load_spec()), length)
        self.spec = _patch_order_number(spec, order_number_type)
        self._validator = Validator(self.spec)
        paths = self.spec["paths"]
        self._post = _body_schema(paths["/orders"]["post"])
        self._put = _body_schema(paths["/orders/{orderID}"]["put"])
        self._patch = _body_schema(paths["/orders/{orderID}"]["patch"])

    def create(self, body: Any) -> list[SchemaError]:
        errors = self._order(body, self._post)
        if isinstance(body, dict):
            if not any(body.get(k) for k in ("email", "phone", "contactID")):
                errors.append(SchemaError("email", "required", "email, phone or contactID is required"))
            if body.get("orderID") == "":
                errors.append(SchemaError("orderID", "minLength", "must not be empty"))
        return errors

    def replace(self, body: Any) -> list[SchemaError]:
        return self._order(body, self._put)

    def patch(self, body: Any) -> list[SchemaError]:
        if not isinstance(body, dict):
            return [SchemaError("", "type", "must be a JSON object")]
        errors = self._validator.validate(body, self._patch)
        if self.seed_rules:
            errors += _status_errors(body)
        return errors

    def _order(self, body: Any, schema: Mapping[str, Any]) -> list[SchemaError]:
        if not isinstance(body, dict):
            return [SchemaError("", "type", "must be a JSON object")]
        errors = self._validator.validate(body, schema)
        if self.seed_rules:
            errors += self._seed_errors(body)
        flagged = {e.path for e in errors}
        for name in ("billingAddress", "shippingAddress"):
            address = body.get(name)
            code = address.get("countryCode") if isinstance(address, dict) else None
            if f"{name}.countryCode" in flagged:
                continue
            if isinstance(code, str) and not is_country_code(code, self.country_code_format):
                errors.append(
                    SchemaError(
                        f"{name}.countryCode",
                        "enum",
                        f"must be an ISO 3166-1 {self.country_code_format.replace('alpha', 'alpha-')} code",
                    )
                )
        return errors

    def _seed_errors(self, body: Mapping[str, Any]) -> list[SchemaError]:
        """The seed's rules beyond the spec (status enums, discountType, product cap, currency case)."""
        errors = _status_errors(body)
        if "discountType" in body and body["discountType"] not in DISCOUNT_TYPES:
            errors.append(SchemaError("discountType", "enum", f"must be one of {list(DISCOUNT_TYPES)}"))
        currency = body.get("currency")
        if isinstance(currency, str) and not _CURRENCY.match(currency):
            errors.append(SchemaError("currency", "pattern", "must be an uppercase ISO 4217 code"))
        products = body.get("products")
        if isinstance(products, list) and len(products) > self.max_products:
            errors.append(
                SchemaError("products", "maxItems", f"at most {self.max_products} products per order")
            )
        return errors

    def category(self, body: Any, *, with_id: bool) -> list[SchemaError]:
        """`{categoryID, title}` (the spec's category schema requires `title`)."""
        if not isinstance(body, dict):
            return [SchemaError("", "type", "must be a JSON object")]
        errors = self._validator.validate(body, self.spec["components"]["schemas"]["category-partial"])
        category_id = body.get("categoryID")
        if with_id and (not isinstance(category_id, str) or not category_id):
            errors.append(SchemaError("categoryID", "required", "is required (non-empty string)"))
        return errors

    def event(self, body: Any) -> list[SchemaError]:
        """v5 `POST /events` envelope, plus the v2 order-event properties (docs/connectors.md#omnisend-events)."""
        if not isinstance(body, dict):
            return [SchemaError("", "type", "must be a JSON object")]
        errors = [
            SchemaError(name, "required", "is required (non-empty string)")
            for name in ("eventName", "origin")
            if not isinstance(body.get(name), str) or not body[name]
        ]
        event_id = body.get("eventID")
        if event_id is not None and not _is_uuid(event_id):
            errors.append(SchemaError("eventID", "format", "must be a UUID"))
        event_time = body.get("eventTime")
        if event_time is not None and not (isinstance(event_time, str) and _is_event_time(event_time)):
            errors.append(SchemaError("eventTime", "format", "must be RFC 3339 or YYYY-MM-DD HH:MM:SS+HH:MM"))
        errors += _contact_errors(body.get("contact"))
        props = body.get("properties", {})
        if not isinstance(props, dict):
            errors.append(SchemaError("properties", "type", "must be an object"))
        elif body.get("eventName") in ORDER_EVENTS and body.get("eventVersion") == "v2":
            errors += _order_event_errors(str(body["eventName"]), props)
        return errors


def _body_schema(operation: Mapping[str, Any]) -> Mapping[str, Any]:
    schema: Mapping[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


def _patch_country_code(node: Any, length: int) -> Any:
    """Let countryCode be as long as the configured format (the seed's alpha-3 is 3; the spec says 2)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "countryCode" and isinstance(value, dict):
                value["minLength"] = value["maxLength"] = length
            else:
                _patch_country_code(value, length)
    elif isinstance(node, list):
        for item in node:
            _patch_country_code(item, length)
    return node


def _patch_order_number(spec: dict[str, Any], kind: OrderNumberType) -> dict[str, Any]:
    """Type the v3 order's `orderNumber` as configured (the seed says string; the spec integer)."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "orderNumber" and isinstance(value, dict) and "type" in value:
                    value["type"] = kind
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(spec)
    return spec


def _status_errors(body: Mapping[str, Any]) -> list[SchemaError]:
    errors = []
    for name, allowed in (("paymentStatus", PAYMENT_STATUSES), ("fulfillmentStatus", FULFILLMENT_STATUSES)):
        if name in body and body[name] not in allowed:
            errors.append(SchemaError(name, "enum", f"must be one of {list(allowed)}"))
    return errors


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _is_event_time(value: str) -> bool:
    if is_date_time(value):
        return True
    try:
        parsed = datetime.strptime(value, "%Y-%m-%d %H:%M:%S%z")
    except ValueError:
        return False
    return parsed.tzinfo is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _contact_errors(contact: Any) -> list[SchemaError]:
    if not isinstance(contact, dict):
        return [SchemaError("contact", "required", "is required (object with email or phone)")]
    errors = []
    if not contact.get("email") and not contact.get("phone") and not contact.get("id"):
        errors.append(SchemaError("contact.email", "required", "contact needs email, phone or id"))
    email = contact.get("email")
    if email is not None and (not isinstance(email, str) or check_format("email", email)):
        errors.append(SchemaError("contact.email", "format", "must be a valid email address"))
    phone = contact.get("phone")
    if phone is not None and (not isinstance(phone, str) or len(phone) > 15):
        errors.append(SchemaError("contact.phone", "maxLength", "must be a string of at most 15 characters"))
    for name in ("firstName", "lastName"):
        value = contact.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > EVENT_NAME_MAX):
            errors.append(
                SchemaError(f"contact.{name}", "maxLength", f"must be at most {EVENT_NAME_MAX} characters")
            )
    code = contact.get("countryCode")
    if code is not None and (not isinstance(code, str) or len(code) > 3):
        errors.append(SchemaError("contact.countryCode", "maxLength", "must be at most 3 characters"))
    return errors


def _order_event_errors(name: str, props: Mapping[str, Any]) -> list[SchemaError]:
    errors: list[SchemaError] = []
    p = "properties."
    if not isinstance(props.get("orderID"), str) or not props["orderID"]:
        errors.append(SchemaError(p + "orderID", "required", "is required (string)"))
    currency = props.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.match(currency):
        errors.append(SchemaError(p + "currency", "pattern", "is required, uppercase ISO 4217"))
    if "orderNumber" in props and not _is_number(props["orderNumber"]):
        errors.append(SchemaError(p + "orderNumber", "type", "must be numeric"))
    if "totalPrice" not in props:
        errors.append(SchemaError(p + "totalPrice", "required", "is required (revenue reporting)"))
    errors += [
        SchemaError(p + money, "type", "must be a decimal number")
        for money in _EVENT_MONEY
        if money in props and not _is_number(props[money])
    ]
    errors += [SchemaError(p + e.path, e.keyword, e.message) for e in _status_errors(props)]
    tracking = props.get("tracking")
    if isinstance(tracking, dict) and "courierURL" in tracking:
        url = tracking["courierURL"]
        if not isinstance(url, str) or check_format("uri", url):
            errors.append(SchemaError(p + "tracking.courierURL", "format", "must be a valid URL"))
    lists = ["lineItems"] + (["refundedLineItems"] if name == "order refunded" else [])
    for key in lists:
        items = props.get(key)
        if key == "refundedLineItems" and not isinstance(items, list):
            errors.append(SchemaError(p + key, "required", "is required for order refunded"))
            continue
        if items is None:
            continue
        if not isinstance(items, list):
            errors.append(SchemaError(p + key, "type", "must be an array"))
            continue
        for i, item in enumerate(items):
            errors += _line_errors(item, f"{p}{key}[{i}]")
    return errors


def _line_errors(item: Any, path: str) -> list[SchemaError]:
    if not isinstance(item, dict):
        return [SchemaError(path, "type", "must be an object")]
    errors = [SchemaError(f"{path}.{k}", "required", "is required") for k in _LINE_REQUIRED if k not in item]
    errors += [
        SchemaError(f"{path}.{money}", "type", "must be a decimal number")
        for money in ("productPrice", "productDiscount", "productStrikeThroughPrice")
        if money in item and not _is_number(item[money])
    ]
    quantity = item.get("productQuantity")
    if quantity is not None and (not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1):
        errors.append(SchemaError(f"{path}.productQuantity", "type", "must be a whole number >= 1"))
    return errors

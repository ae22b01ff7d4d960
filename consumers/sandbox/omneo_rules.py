"""Omneo request validation, Laravel-style (docs/connectors.md#omneo-order-fields to #omneo-errors-limits).

Why Laravel-style: Omneo is a Laravel app; its 422s are `{"message", "errors": {field: [..]}}`
with messages like "The total field is required.". Field types follow the docs and the SDK;
required sets are configurable because Omneo does not document them ([X]).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from consumers.sandbox.schema import check_format, is_date_time

Errors = dict[str, list[str]]
Check = Callable[[Any], str | None]
_INT = re.compile(r"^-?\d+$")
_NUM = re.compile(r"^-?\d+(\.\d+)?$")


def _attr(key: str) -> str:
    return key.replace("_", " ")


def numeric(value: Any) -> str | None:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)) or (
        isinstance(value, str) and bool(_NUM.match(value))
    )
    return None if ok else "must be a number"


def integer(value: Any) -> str | None:
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and bool(_INT.match(value))
    )
    return None if ok else "must be an integer"


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def string_or_int(value: Any) -> str | None:
    return None if isinstance(value, str) or integer(value) is None else "must be a string"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "field must be true or false"


def array(value: Any) -> str | None:
    return None if isinstance(value, list) else "must be an array"


def obj(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


def currency(value: Any) -> str | None:
    return (
        None
        if isinstance(value, str) and re.fullmatch(r"[A-Z]{3}", value)
        else "must be a 3-letter currency code"
    )


def wall_clock(value: Any) -> str | None:
    """Transactions: "YYYY-MM-DD HH:MM:SS" local time, no offset (O-CT, legacy validator)."""
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return "does not match the format Y-m-d H:i:s"
    return None


def any_datetime(value: Any) -> str | None:
    """Orders' `occurred_at` format is undocumented: accept wall-clock or ISO 8601."""
    if isinstance(value, str) and (wall_clock(value) is None or is_date_time(value)):
        return None
    return "is not a valid date"


def timezone(value: Any) -> str | None:
    if not isinstance(value, str) or not value or value.startswith("/") or ".." in value:
        return "must be a valid timezone"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "must be a valid timezone"
    return None


def email(value: Any) -> str | None:
    return (
        None
        if isinstance(value, str) and not check_format("email", value)
        else "must be a valid email address"
    )


NOT_NULL = frozenset({"is_void", "receipt_is_email"})
"""The SDK documents that Omneo rejects null for these (an API bug); mirrored here."""

ITEM_FIELDS: dict[str, Check] = {
    "name": string,
    "quantity": integer,
    "price_current": numeric,
    "price_sell": numeric,
    "price_original": numeric,
    "price_margin": numeric,
    "price_tax": numeric,
    "product_variant_id": integer,
    "product_variant_sku": string,
    "variant_external_id": string,
    "external_id": string,
    "sku": string,
    "department": string,
    "is_void": boolean,
    "discounts": array,
    "meta": obj,
    "product_variant": obj,
}
ITEM_REQUIRED = ("name", "quantity", "price_current", "price_sell")

_COMMON: dict[str, Check] = {
    "profile_id": string,
    "profile_id_handle": string,
    "external_id": string,
    "total": numeric,
    "total_original": numeric,
    "rounding": numeric,
    "margin": numeric,
    "status": string,
    "type": string,
    "currency": currency,
    "location_id": string_or_int,
    "staff_id": string_or_int,
    "order_number": string_or_int,
    "timezone": timezone,
    "is_void": boolean,
    "receipt_is_email": boolean,
    "receipt_email": email,
    "receipt_ref": string,
    "payments": array,
    "tags": array,
    "systems": array,
    "meta": obj,
    "items": array,
}
ORDER_FIELDS: dict[str, Check] = {**_COMMON, "occurred_at": any_datetime, "due_date": any_datetime}
TRANSACTION_FIELDS: dict[str, Check] = {
    **_COMMON,
    "transacted_at": wall_clock,
    "order_id": integer,
    "external_order_id": string,
    "redemption_id": integer,
    "location_id": string,  # the SDK's TransactionInput: `location_id: string` (required)
    "linked_receipt_ref": string,
    "tender": string,
    "need_action": boolean,
    "fees": array,
    "custom_fields": array,
}


def validate(
    body: Any, fields: Mapping[str, Check], required: Iterable[str], *, partial: bool = False
) -> Errors:
    """Laravel-like validation; with `partial` only supplied keys are checked (PUT, upsert-update)."""
    if not isinstance(body, dict):
        return {"body": ["The request body must be a JSON object."]}
    errors: Errors = {}
    _check_fields(body, fields, () if partial else required, "", errors)
    if body.get("profile_id_handle") == "email" and email(body.get("profile_id")) is not None:
        errors.setdefault("profile_id", []).append(
            "The profile id must be an email when the handle is email."
        )
    items = body.get("items")
    if isinstance(items, list):
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                errors.setdefault(f"items.{i}", []).append(f"The items.{i} must be an object.")
                continue
            _check_fields(item, ITEM_FIELDS, ITEM_REQUIRED, f"items.{i}.", errors)
    return errors


def _check_fields(
    body: Mapping[str, Any], fields: Mapping[str, Check], required: Iterable[str], prefix: str, errors: Errors
) -> None:
    for name in required:
        if body.get(name) in (None, "", []):
            errors.setdefault(prefix + name, []).append(f"The {_attr(prefix + name)} field is required.")
    for name, check in fields.items():
        if name not in body or prefix + name in errors:
            continue
        value = body[name]
        if value is None:
            if name in NOT_NULL:
                errors.setdefault(prefix + name, []).append(
                    f"The {_attr(prefix + name)} field must be true or false."
                )
            continue
        problem = check(value)
        if problem:
            errors.setdefault(prefix + name, []).append(f"The {_attr(prefix + name)} {problem}.")

"""Which fields of which events are personal data (docs/privacy.md#what-is-personal).

Everything else (ids, amounts, lines, statuses, shipments, the profile id, the address's
country) stays readable, so folds, Transactions, totals, read models and audits work on the
stored form, before and after an erasure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ledger.privacy.cipher import DataKey, encrypt_part, encrypt_value, token_json_bound

__all__ = [
    "ADDRESS_FIELDS",
    "CUSTOMER_FIELDS",
    "PERSONAL_EVENT_TYPES",
    "personal_paths",
    "seal_details",
    "sealed_growth",
]

CUSTOMER_FIELDS = ("email", "phone", "first_name", "last_name")
ADDRESS_FIELDS = (
    "first_name",
    "last_name",
    "company",
    "phone",
    "address",
    "address2",
    "city",
    "postal_code",
    "state",
    "state_code",
)
ADDRESSES = ("billing_address", "shipping_address")
DETAIL_FIELDS = ("note",)
#: The events whose `data.details` carries personal fields.
PERSONAL_EVENT_TYPES = frozenset({"OrderPlaced", "OrderDetailsChanged"})


def personal_paths() -> list[str]:
    """Every personal field, as a dotted path in an event's `data` (for docs and tests)."""
    paths = [f"details.customer.{f}" for f in CUSTOMER_FIELDS]
    paths += [f"details.{a}.{f}" for a in ADDRESSES for f in ADDRESS_FIELDS]
    paths += [f"details.{f}" for f in DETAIL_FIELDS]
    return paths


def _seal_part(part: dict[str, Any], names: tuple[str, ...], key: DataKey) -> dict[str, Any]:
    """A copy of `part` with its personal strings sealed in one part token: in the first of
    them, the others stored as null (docs/privacy.md#costs; `cipher` describes the format)."""
    values = {name: value for name in names if isinstance(value := part.get(name), str)}
    if not values:
        return part
    out = dict(part)
    for name in values:
        out[name] = None
    out[next(iter(values))] = encrypt_part(key, values)
    return out


def seal_details(data: dict[str, Any], key: DataKey) -> dict[str, Any]:
    """A copy of an event's `data` with its personal strings sealed under `key`: a part token
    for the customer and for each address, a value token for the note."""
    details = data.get("details")
    if not isinstance(details, dict):
        return data
    new = dict(details)
    for name in DETAIL_FIELDS:
        value = new.get(name)
        if isinstance(value, str):
            new[name] = encrypt_value(key, value)
    customer = details.get("customer")
    if isinstance(customer, dict):
        new["customer"] = _seal_part(customer, CUSTOMER_FIELDS, key)
    for name in ADDRESSES:
        address = details.get(name)
        if isinstance(address, dict):
            new[name] = _seal_part(address, ADDRESS_FIELDS, key)
    return {**data, "details": new}


def subject_hints(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(profile id, email) of an event's customer, either may be None."""
    details = data.get("details")
    customer = details.get("customer") if isinstance(details, dict) else None
    if not isinstance(customer, dict):
        return None, None
    profile, email = customer.get("profile_id"), customer.get("email")
    return (
        profile if isinstance(profile, str) and profile else None,
        email if isinstance(email, str) and email else None,
    )


def _value_growth(value: str) -> int:
    # The plain string's JSON text is at least its UTF-8 bytes and two quotes (escapes only add).
    plain = len(value.encode())
    return token_json_bound(plain) - plain - 2


def _part_growth(part: Any, names: tuple[str, ...]) -> int:
    if not isinstance(part, Mapping):
        return 0
    values = {name: value for name in names if isinstance(value := part.get(name), str)}
    if not values:
        return 0
    plain = sum(len(value.encode()) + 2 for value in values.values())  # at least, as above
    # The token holds the values' JSON object; every other sealed value becomes `null`.
    return token_json_bound(len(orjson.dumps(values))) + 4 * (len(values) - 1) - plain


def sealed_growth(document: Mapping[str, Any]) -> int:
    """At most how many bytes sealing adds to the JSON text of `document`: an event's `data`
    (personal fields under `details`) or an order view (the customer's fields at the top, the
    addresses and the note beside them). What `OrderService` adds to a message's plain size
    to check it against the topic's limit before appending (the relay publishes the sealed form)."""
    details = document.get("details")
    if isinstance(details, Mapping):
        part: Mapping[str, Any] = details
        customer = details.get("customer")
    else:
        part = customer = document
    total = _part_growth(customer, CUSTOMER_FIELDS)
    for name in DETAIL_FIELDS:
        value = part.get(name)
        if isinstance(value, str):
            total += _value_growth(value)
    for name in ADDRESSES:
        total += _part_growth(part.get(name), ADDRESS_FIELDS)
    return total

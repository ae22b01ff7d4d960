"""Which fields of which events are personal data (docs/privacy.md#what-is-personal).

Everything else (ids, amounts, lines, statuses, shipments, the profile id, the address's
country) stays readable, so folds, Transactions, totals, read models and audits work on the
stored form, before and after an erasure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ledger.privacy.cipher import token_json_bound

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


def _seal_fields(part: dict[str, Any], names: tuple[str, ...], seal: Callable[[str], str]) -> dict[str, Any]:
    out = dict(part)
    for name in names:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = seal(value)
    return out


def seal_details(data: dict[str, Any], seal: Callable[[str], str]) -> dict[str, Any]:
    """A copy of an event's `data` with every personal string replaced by `seal(value)`."""
    details = data.get("details")
    if not isinstance(details, dict):
        return data
    new = _seal_fields(details, DETAIL_FIELDS, seal)
    customer = details.get("customer")
    if isinstance(customer, dict):
        new["customer"] = _seal_fields(customer, CUSTOMER_FIELDS, seal)
    for name in ADDRESSES:
        address = details.get(name)
        if isinstance(address, dict):
            new[name] = _seal_fields(address, ADDRESS_FIELDS, seal)
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


def _growth(value: str) -> int:
    # The plain string's JSON text is at least its UTF-8 bytes and two quotes (escapes only add).
    plain = len(value.encode())
    return token_json_bound(plain) - plain - 2


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
    total = 0

    def add(obj: Any, names: tuple[str, ...]) -> None:
        nonlocal total
        if isinstance(obj, Mapping):
            for name in names:
                value = obj.get(name)
                if isinstance(value, str):
                    total += _growth(value)

    add(part, DETAIL_FIELDS)
    add(customer, CUSTOMER_FIELDS)
    for name in ADDRESSES:
        add(part.get(name), ADDRESS_FIELDS)
    return total

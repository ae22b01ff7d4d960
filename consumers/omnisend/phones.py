"""Phones for Omnisend: E.164 or nothing (docs/connectors.md, "Destinations, round two").

Why: Omnisend's order docs say a phone is used for SMS and automations only in E.164 ("other
formats will be accepted, but won't be used"), and its events API refuses a contact phone
longer than 15 characters, which would park the whole order for one bad field. Producers send
what the shopper typed ("0412 345 678", "(512) 555-0147"), so the number is parsed with
Google's libphonenumber rules (`phonenumbers`), the region taken from the order's address when
the number has no country prefix. A number that cannot be made a valid E.164 number is left
out (the caller records the drop so it is counted), never sent half-right.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

from consumers.fanout.countries import convert_country

__all__ = ["Phone", "normalise_phone"]


@dataclass(frozen=True, slots=True)
class Phone:
    """The E.164 form (None when there is nothing usable) and whether a given number was dropped."""

    e164: str | None
    dropped: bool


def normalise_phone(raw: str | None, country_code: str | None, *, max_chars: int | None = None) -> Phone:
    """`raw` as E.164, using `country_code` (alpha-2 or alpha-3) for numbers without a prefix.

    `max_chars` drops a valid number that is still too long for the target field (the events
    API's 15 characters), since a truncated phone reaches the wrong person.
    """
    if raw is None or not raw.strip():
        return Phone(None, dropped=False)
    region = convert_country(country_code, "alpha2") if country_code else None
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return Phone(None, dropped=True)
    if not phonenumbers.is_valid_number(parsed):
        return Phone(None, dropped=True)
    text = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if max_chars is not None and len(text) > max_chars:
        return Phone(None, dropped=True)
    return Phone(text, dropped=False)

"""JSON columns: the domain's views carry money as `Decimal`, stored as exact JSON numbers.

Documents served as they are (`doc`) are `text` holding the JSON we wrote: exact decimals such
as 19.90 come back verbatim, and nothing queries inside them, so the server need not parse
them at all (a `json` column validates every value on COPY, about 10 µs per kB; `jsonb` also
converts it to its binary form). Cast to `json` to query one by hand (`doc::json ->> 'status'`).
Columns meant for querying stay jsonb.

Views are built with `MONEY` and `NATIVE_DATETIMES`: orjson writes Decimal fragments and
datetimes itself, byte for byte what the default view serializes to (a test checks it).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from ledger.domain.views import MoneyFormat


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _fragment(major: Decimal) -> orjson.Fragment:
    return orjson.Fragment(str(major))


#: Money for the views of documents we serialize: the exact number's text, ready for orjson, so
#: `dumps` writes it without a per-amount `default` callback (same bytes as `_default`).
MONEY = MoneyFormat(_fragment)


def dumps(value: Any) -> bytes:
    """JSON bytes with `Decimal` written as the number it is (never through a float)."""
    return orjson.dumps(value, default=_default)


def text_value(value: Any) -> str:
    """A document for a `text` column: the JSON text `dumps` writes."""
    return dumps(value).decode()


def json_value(value: Any) -> orjson.Fragment:
    """A json/jsonb column value, pre-serialized: the orjson codecs write a Fragment as is."""
    return orjson.Fragment(dumps(value))

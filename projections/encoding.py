"""JSON columns: the domain's views carry money as `Decimal`, stored as exact JSON numbers.

Documents served as they are (`doc`) use the `json` type: stored as the text we wrote (exact
decimals such as 19.90 come back verbatim) and about 3x cheaper to COPY than jsonb, which must
be parsed into its binary form; nothing queries inside them. Columns meant for querying stay jsonb.
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


def json_value(value: Any) -> orjson.Fragment:
    """A json/jsonb column value, pre-serialized: the orjson codecs write a Fragment as is."""
    return orjson.Fragment(dumps(value))

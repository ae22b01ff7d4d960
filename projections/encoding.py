"""JSON columns: the domain's views carry money as `Decimal`, stored as exact JSON numbers.

Documents served as they are (`doc`) are `text` holding the JSON we wrote: exact decimals such
as 19.90 come back verbatim, and nothing queries inside them, so the server need not parse
them at all (a `json` column validates every value on COPY, about 10 µs per kB; `jsonb` also
converts it to its binary form). Cast to `json` to query one by hand (`doc::json ->> 'status'`).
Columns meant for querying stay jsonb.

Views are built with `JSON_MONEY` and `NATIVE_DATETIMES`: orjson writes Decimal fragments and
datetimes itself, byte for byte what the default view serializes to (a test checks it). The
codec is the house's one (`ledger_kernel.wire.codec`).
"""

from __future__ import annotations

from typing import Any

import orjson

from ledger_kernel.wire.codec import dumps_str_keys as _dumps


def text_value(value: Any) -> str:
    """A document for a `text` column: the JSON text `dumps` writes."""
    return _dumps(value).decode()


def json_value(value: Any) -> orjson.Fragment:
    """A json/jsonb column value, pre-serialized: the orjson codecs write a Fragment as is."""
    return orjson.Fragment(_dumps(value))

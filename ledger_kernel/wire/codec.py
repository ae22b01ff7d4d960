"""The one JSON codec of the house: decimals stay exact in and out, hostile input is refused.

Every writer of JSON (HTTP responses, stored idempotent outcomes, the `orders.events`
envelope, projection documents) and every reader of untrusted JSON (HTTP bodies, Kafka intake
commands) goes through this module, so money is written and read one way everywhere.

Parsing (`parse_json`) keeps every number with a fraction or exponent as `Decimal`, refuses
NaN/Infinity, duplicate keys, integers over 64 digits, nesting deeper than `MAX_DEPTH`, and
strings PostgreSQL or UTF-8 cannot hold (`\\u0000`, lone surrogates). Everything it refuses is
raised as `BodyError` with a JSON-pointer-ish location, which the API maps to 400/422 and the
Kafka intake to a rejection.

Serialization uses orjson and writes `Decimal` as a JSON number from its digits, in plain
fixed-point notation (`19.90`, `1500` for JPY): never a string, never through a float, never
in exponent notation. Read it back exactly with `parse_json` (or `json.loads(s,
parse_float=Decimal)`). `dumps` keeps the dict order it is given; `dumps_canonical` sorts keys,
so the same value always gives the same bytes (a re-published envelope is byte-identical).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

MAX_DEPTH = 32
MAX_INT_DIGITS = 64


class BodyError(ValueError):
    """The body is not acceptable JSON; `status` is 400 (syntax) or 422 (content)."""

    def __init__(self, status: int, reason: str, loc: list[str | int] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.loc = loc or []


def _reject_constant(name: str) -> Any:
    raise BodyError(422, f"{name} is not a number this API accepts")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BodyError(422, f"integer with more than {MAX_INT_DIGITS} digits")
    return int(text)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise BodyError(400, f"duplicate key {key!r}")
        out[key] = value
    return out


def _max_depth(text: str) -> int:
    """Deepest bracket nesting, ignoring brackets inside strings (a linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _check_strings(value: Any, loc: list[str | int]) -> None:
    if isinstance(value, str):
        _check_text(value, loc)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, loc)
            _check_strings(item, [*loc, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, [*loc, i])


def _check_text(text: str, loc: list[str | int]) -> None:
    if "\x00" in text:
        raise BodyError(422, "strings must not contain U+0000", loc)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(422, "strings must not contain lone surrogates", loc) from None


def parse_json(raw: bytes | str) -> Any:
    """Parse untrusted JSON; raise `BodyError` for anything the ledger must not accept."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError(400, "body is not valid UTF-8") from None
    # Fast path: nesting cannot exceed the number of opening brackets (most bodies have few).
    if text.count("[") + text.count("{") > MAX_DEPTH and _max_depth(text) > MAX_DEPTH:
        raise BodyError(400, f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        value = json.loads(
            text,
            parse_float=Decimal,
            parse_int=_parse_int,
            parse_constant=_reject_constant,
            object_pairs_hook=_no_duplicates,
        )
    except BodyError:
        raise
    except (ValueError, RecursionError) as exc:
        raise BodyError(400, f"malformed JSON: {exc}") from None
    # U+0000 and lone surrogates can only come from \u escapes: the text was strict UTF-8 and
    # json.loads refuses raw control characters in strings. No escape, nothing to walk.
    if "\\u" in text:
        _check_strings(value, [])
    return value


def decimal_fragment(value: Decimal) -> orjson.Fragment:
    """A Decimal as a JSON number: its plain fixed-point digits, never a float or an exponent."""
    text = str(value)  # money from `to_major` never has a positive exponent: plain digits
    if "E" in text or "N" in text or "I" in text:  # exponent, NaN, Infinity
        if not value.is_finite():
            raise TypeError(f"non-finite Decimal {value} cannot be written as JSON")
        text = format(value, "f")
    return orjson.Fragment(text)


def _default(obj: Any) -> Any:
    """orjson fallback: `Decimal` as its number; sets in a stable order (sorted by their JSON)."""
    if isinstance(obj, Decimal):
        return decimal_fragment(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=lambda item: orjson.dumps(item, default=_default, option=_SORTED))
    raise TypeError(f"type {type(obj).__name__} is not JSON serializable")


_SORTED = orjson.OPT_SORT_KEYS


def dumps(value: Any) -> bytes:
    """JSON bytes in the value's own key order; `Decimal` as a plain JSON number (`19.95`)."""
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def dumps_str_keys(value: Any) -> bytes:
    """`dumps`' bytes, cheaper for values whose dict keys are all strings (the domain's views).

    `OPT_NON_STR_KEYS` puts every dict on orjson's slower path: about 20% of a 2.8 kB order
    document (13 -> 10 us; a rebuild writes one per order). Without it orjson refuses a
    non-string key rather than writing it differently, so the fallback keeps `dumps`' bytes.
    """
    try:
        return orjson.dumps(value, default=_default)
    except orjson.JSONEncodeError:
        return dumps(value)


def dumps_canonical(value: Any) -> bytes:
    """JSON bytes with sorted keys and exact decimals: the same value always gives the same bytes."""
    return orjson.dumps(value, default=_default, option=_SORTED)

"""`Timestamp`: the one datetime type every producer input and date query parameter uses.

Why a type of its own: a datetime the ledger accepts ends up in PostgreSQL (`timestamptz`,
through asyncpg, which converts it to UTC) and in Python arithmetic and views. A value Python
can hold with its offset but not in UTC (`9999-12-31T23:59:59-14:00` is year 10000 in UTC)
was accepted, then raised `OverflowError` in every reader that touched it: the projections
froze on it and date filters answered 500. Lenient parsing let an integer (`canceled_at: 0`)
through as a Unix time. So, at the edge:

- only an RFC 3339 date-time string is accepted (`2026-01-31T10:00:00+10:00`, `...Z`), with
  its offset (no naive times), no numbers, no other ISO 8601 forms, no leap second;
- the instant, normalised to UTC, must lie within `MIN_TIMESTAMP` .. `MAX_TIMESTAMP`: a day
  inside what Python's `datetime` holds, so converting it to any other offset (+-23:59) can
  never overflow either, and well inside PostgreSQL's `timestamptz` range.

The producer's offset is kept (the instant is checked, not rewritten): an order placed at
`10:00+10:00` reads back as it was sent. Python callers may also pass an aware `datetime`.
The module is pure (pydantic only) so the HTTP API, the Kafka intake and the read-model
routes all share it (this module is deliberately outside the projections' code hash).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

__all__ = ["MAX_TIMESTAMP", "MIN_TIMESTAMP", "Timestamp", "parse_timestamp"]

#: Earliest accepted instant (UTC): 0001-01-02, a day after Python's `datetime.min`.
MIN_TIMESTAMP = datetime(1, 1, 2, tzinfo=UTC)
#: Latest accepted instant (UTC): the end of 9999-12-30, a day before Python's `datetime.max`.
MAX_TIMESTAMP = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_RANGE = f"{MIN_TIMESTAMP.isoformat()} .. {MAX_TIMESTAMP.isoformat()} (UTC)"


def parse_timestamp(value: object) -> datetime:
    """An aware datetime from an RFC 3339 string (or an aware datetime), bounded; else ValueError."""
    if isinstance(value, datetime):
        parsed = value
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise ValueError("must be a time with an offset (RFC 3339, e.g. 2026-01-31T10:00:00Z)")
    elif isinstance(value, str):
        parsed = _parse_rfc3339(value)
    else:
        raise ValueError("must be an RFC 3339 date-time string, e.g. 2026-01-31T10:00:00Z (not a number)")
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"is outside the supported range {_RANGE}") from None
    if not MIN_TIMESTAMP <= instant <= MAX_TIMESTAMP:
        raise ValueError(f"is outside the supported range {_RANGE}")
    return parsed


def _parse_rfc3339(text: str) -> datetime:
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T10:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, off_h, off_m = match.group(7, 8, 9, 10, 11)
    if second == 60:
        raise ValueError("leap seconds (:60) are not supported")
    if zulu:
        tz: timezone = UTC
    else:
        hours, minutes = int(off_h), int(off_m)
        if hours > 23 or minutes > 59:
            raise ValueError("has an invalid UTC offset")
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if sign == "-" else delta) if delta else UTC
    micro = int((fraction or "0").ljust(6, "0")[:6])
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"is not a valid date-time ({exc})") from None


def _validate(value: Any) -> datetime:
    return parse_timestamp(value)


#: An RFC 3339 date-time within the supported range (see the module docstring).
Timestamp = Annotated[
    datetime,
    BeforeValidator(_validate),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": f"RFC 3339 date-time with offset, within {_RANGE}",
        }
    ),
]

"""`Timestamp`: RFC 3339 strings only, and only instants PostgreSQL and Python hold in any offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from ledger.domain.timestamps import MAX_TIMESTAMP, MIN_TIMESTAMP, Timestamp

ADAPTER: TypeAdapter[datetime] = TypeAdapter(Timestamp)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T10:00:00Z", datetime(2026, 1, 31, 10, tzinfo=UTC)),
        ("2026-01-31t10:00:00z", datetime(2026, 1, 31, 10, tzinfo=UTC)),
        (
            "2026-01-31T10:00:00.5+10:00",
            datetime(2026, 1, 31, 10, 0, 0, 500000, timezone(timedelta(hours=10))),
        ),
        (
            "2026-01-31T10:00:00.123456789-03:30",
            datetime(2026, 1, 31, 10, 0, 0, 123456, timezone(-timedelta(hours=3, minutes=30))),
        ),
        ("0001-01-02T00:00:00Z", MIN_TIMESTAMP),
        ("9999-12-30T23:59:59.999999Z", MAX_TIMESTAMP),
        (
            "9999-12-31T13:59:59+14:00",
            datetime(9999, 12, 31, 13, 59, 59, tzinfo=timezone(timedelta(hours=14))),
        ),
    ],
)
def test_an_rfc3339_time_in_range_keeps_its_offset(text: str, expected: datetime) -> None:
    parsed = ADAPTER.validate_python(text)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "value",
    [
        0,
        1700000000,
        1.5,
        True,
        None,
        "0",
        "1700000000",
        "2026-01-31",
        "2026-01-31T10:00:00",  # no offset
        "2026-01-31 10:00:00Z",  # ISO 8601, not RFC 3339's T
        "2026-W05-6T10:00:00Z",
        "٢٠٢٦-01-31T10:00:00Z",  # Arabic-Indic digits
        "2026-01-31T10:00:60Z",  # leap second: Python cannot hold it
        "2026-02-30T00:00:00Z",
        "2026-01-31T10:00:00+24:00",
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "9999-12-31T00:00:00Z",  # in Python's range, but not one offset further
        "0001-01-01T23:59:59Z",
        " 2026-01-31T10:00:00Z",
        datetime(2026, 1, 31),  # naive
    ],
)
def test_anything_else_is_refused(value: object) -> None:
    with pytest.raises(ValidationError):
        ADAPTER.validate_python(value)


def test_every_accepted_instant_converts_to_any_offset() -> None:
    offsets = [timezone(timedelta(hours=-23, minutes=-59)), UTC, timezone(timedelta(hours=23, minutes=59))]
    years = {bound.astimezone(offset).year for bound in (MIN_TIMESTAMP, MAX_TIMESTAMP) for offset in offsets}
    assert years == {1, 9999}
    assert ADAPTER.json_schema()["format"] == "date-time"

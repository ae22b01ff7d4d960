"""The JSON codec keeps money exact both ways and refuses what PostgreSQL or UTF-8 cannot hold."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger_kernel.wire.codec import MAX_DEPTH, BodyError, dumps, parse_json


def test_decimals_are_parsed_exactly_and_written_as_json_numbers() -> None:
    value = parse_json(b'{"total": 100.0000000000000001, "n": 3, "big": 1e2}')
    assert value == {"total": Decimal("100.0000000000000001"), "n": 3, "big": Decimal("1E+2")}
    assert dumps({"total": Decimal("199.95"), "zero": Decimal("0.00")}) == b'{"total":199.95,"zero":0.00}'
    assert dumps({"e": Decimal("1E+2")}) == b'{"e":100}'


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"a": NaN}', 422),
        (b'{"a": -Infinity}', 422),
        (b'{"a": 1, "a": 2}', 400),
        (b'{"a": "\\u0000"}', 422),
        (b'{"a": "\\udc00"}', 422),
        (b'{"\\ud800": 1}', 422),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), 400),
        (b'{"a": ' + b"9" * 65 + b"}", 422),
        (b"\xff", 400),
        (b"{", 400),
    ],
)
def test_hostile_json_is_refused_with_a_status(raw: bytes, status: int) -> None:
    with pytest.raises(BodyError) as info:
        parse_json(raw)
    assert info.value.status == status


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert parse_json(b'{"note": "' + b"[" * 100 + b'"}') == {"note": "[" * 100}


def test_non_finite_decimals_are_never_written() -> None:
    with pytest.raises(TypeError):
        dumps({"x": Decimal("NaN")})

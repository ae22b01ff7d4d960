"""Exact money conversion for 0, 2, 3 and 4 decimal currencies, and the errors for what is not money."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.domain import CURRENCY_EXPONENTS, MAX_MINOR, MoneyError, exponent, to_major, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor", "major"),
    [
        ("199.95", "AUD", 19995, "199.95"),
        ("199.9", "USD", 19990, "199.90"),
        ("0", "EUR", 0, "0.00"),
        ("-12.34", "GBP", -1234, "-12.34"),
        ("1000", "JPY", 1000, "1000"),
        ("1E+3", "KRW", 1000, "1000"),
        ("100.000", "VND", 100, "100"),
        ("1.234", "KWD", 1234, "1.234"),
        ("0.5", "BHD", 500, "0.500"),
        ("1.2345", "CLF", 12345, "1.2345"),
        ("1.00000000000000000000000000000", "USD", 100, "1.00"),
    ],
)
def test_decimal_major_units_convert_exactly_both_ways(
    amount: str, currency: str, minor: int, major: str
) -> None:
    assert to_minor(Decimal(amount), currency) == minor
    assert str(to_major(minor, currency)) == major
    assert to_minor(to_major(minor, currency), currency) == minor


@pytest.mark.parametrize(
    ("code", "exp"),
    [("JPY", 0), ("KRW", 0), ("VND", 0), ("CLP", 0), ("ISK", 0), ("AUD", 2), ("USD", 2), ("EUR", 2)]
    + [(c, 3) for c in ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")]
    + [("CLF", 4), ("UYW", 4)],
)
def test_currency_table_has_iso_4217_exponents(code: str, exp: int) -> None:
    assert exponent(code) == exp


def test_currency_table_is_complete_and_well_formed() -> None:
    assert len(CURRENCY_EXPONENTS) >= 150
    assert all(len(c) == 3 and c.isupper() for c in CURRENCY_EXPONENTS)
    assert "XAU" not in CURRENCY_EXPONENTS  # metals have no minor unit


@pytest.mark.parametrize(
    ("amount", "currency", "code"),
    [
        (Decimal("1.005"), "USD", "too_many_decimals"),
        (Decimal("10.5"), "JPY", "too_many_decimals"),
        (Decimal("0.0001"), "KWD", "too_many_decimals"),
        (Decimal("1.000000000000000000000000000001"), "USD", "too_many_decimals"),
        (Decimal("NaN"), "USD", "invalid_amount"),
        (Decimal("Infinity"), "USD", "invalid_amount"),
        (Decimal("-Infinity"), "USD", "invalid_amount"),
        (Decimal("1e309"), "USD", "amount_too_large"),
        (Decimal(MAX_MINOR + 1), "JPY", "amount_too_large"),
        (Decimal("10000000000000.00"), "USD", "amount_too_large"),
        ("abc", "USD", "invalid_amount"),
        (True, "USD", "invalid_amount"),
        (1.5, "USD", "invalid_amount"),
        (Decimal("1"), "XXX", "unknown_currency"),
        (Decimal("1"), "usd", "unknown_currency"),
    ],
)
def test_what_is_not_exact_money_is_an_error_with_a_reason(amount: object, currency: str, code: str) -> None:
    with pytest.raises(MoneyError) as info:
        to_minor(amount, currency)  # type: ignore[arg-type]
    assert info.value.code == code
    assert info.value.reason


def test_the_largest_amount_is_accepted() -> None:
    assert to_minor(Decimal("9999999999999.99"), "USD") == MAX_MINOR

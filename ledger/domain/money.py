"""Money: ISO 4217 minor-unit exponents and exact Decimal <-> integer minor unit conversion.

The ledger stores money as ``int`` minor units in the order's ISO 4217 currency. Input arrives
as decimal major units (Omneo style) and is converted exactly: a value with more decimals than
the currency has (``1.005 USD``, ``10.5 JPY``) is an error, never rounded. Floats are not money.

Decisions:
- The table holds every active ISO 4217 code (list 2025), including fund codes (BOV, CHE,
  CHW, COU, MXV, USN, UYI) and the 2024/2025 additions (ZWG, XCG). Precious metals and test
  codes (XAU, XAG, XPT, XPD, XDR, XSU, XUA, XBA..XBD, XTS, XXX) have no minor unit and are
  rejected: nobody checks out in troy ounces.
- CLF and UYW have 4 decimals in ISO 4217. They are accepted with exponent 4, so a minor unit
  is 1/10000; consumers that want "cents" must convert with :func:`exponent`, never assume 2.
- Amounts are bounded: ``|minor| <= MAX_MINOR`` (10^15 - 1), so sums of many lines stay far
  below 2^63 (Postgres bigint, Kafka consumers in other languages) and absurd inputs fail fast.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = [
    "CURRENCY_EXPONENTS",
    "MAX_MINOR",
    "MoneyError",
    "exponent",
    "is_currency",
    "to_major",
    "to_minor",
]

MAX_MINOR = 10**15 - 1


def _codes(text: str) -> list[str]:
    return text.split()


_ZERO = _codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF")
_THREE = _codes("BHD IQD JOD KWD LYD OMR TND")
_FOUR = _codes("CLF UYW")
_TWO = _codes(
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD "
    "KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD "
    "NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED "
    "VES WST XCD XCG YER ZAR ZMW ZWG"
)

CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO, 2),
    **dict.fromkeys(_ZERO, 0),
    **dict.fromkeys(_THREE, 3),
    **dict.fromkeys(_FOUR, 4),
}


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly; ``reason`` is for humans."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def is_currency(code: str) -> bool:
    """True for an active ISO 4217 code (upper case) with a minor unit."""
    return code in CURRENCY_EXPONENTS


def exponent(currency: str) -> int:
    """Number of decimals of ``currency``'s minor unit (JPY 0, USD 2, KWD 3, CLF 4)."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError(
            "unknown_currency", f"{currency!r} is not an active ISO 4217 currency code"
        ) from None


def to_minor(amount: Decimal | int | str, currency: str) -> int:
    """Convert major units to integer minor units exactly, or raise :class:`MoneyError`.

    ``bool`` and ``float`` are refused: a bool is not an amount and a float is not exact.
    """
    exp = exponent(currency)
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int | str):
        raise MoneyError("invalid_amount", f"amount must be a decimal number, not {type(amount).__name__}")
    if isinstance(amount, int):
        value = Decimal(amount)
    else:
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise MoneyError("invalid_amount", f"{amount!r} is not a decimal number") from None
    if not value.is_finite():
        raise MoneyError("invalid_amount", "amount must be a finite number (no NaN or Infinity)")
    # Check the magnitude before scaling so 1e999999 never builds a huge integer.
    if value.adjusted() > 15:
        raise MoneyError("amount_too_large", f"amount exceeds {to_major(MAX_MINOR, currency)} {currency}")
    # Exact arithmetic on the digit tuple: Decimal operations round to the context precision
    # (28 digits), which could silently turn 1.000...0001 into 1.00.
    sign, digits, dexp = value.as_tuple()
    assert isinstance(dexp, int)  # finite, checked above
    end = len(digits)
    while end and digits[end - 1] == 0 and dexp < -exp:
        end -= 1
        dexp += 1
    coefficient = int("".join(map(str, digits[:end])) or "0")  # <= 20 digits: magnitude checked
    if coefficient and dexp < -exp:
        raise MoneyError(
            "too_many_decimals",
            f"{currency} has {exp} decimal place{'s' if exp != 1 else ''}; {value} has more",
        )
    minor = coefficient * 10 ** (dexp + exp) if coefficient else 0
    if sign:
        minor = -minor
    if abs(minor) > MAX_MINOR:
        raise MoneyError("amount_too_large", f"amount exceeds {to_major(MAX_MINOR, currency)} {currency}")
    return minor


def to_major(minor: int, currency: str) -> Decimal:
    """Integer minor units to a Decimal with exactly the currency's decimals (1995 USD -> 19.95)."""
    return Decimal(minor).scaleb(-exponent(currency))

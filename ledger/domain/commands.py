"""Command inputs: the HTTP and Kafka request bodies, Omneo-shaped, validated strictly.

Shape: Omneo's order fields (``profile_id``, ``external_id``, ``total``, ``status``, ``items[]``
with ``name``, ``product_variant_id``, ``quantity``, ``price_current``, ``price_sell``,
``price_original``) plus currency, contact, addresses, amounts, discount, methods, tags, note.
Money is a decimal number of major units; the currency-exact conversion to minor units happens
in ``decide`` (it needs the order's currency), so ``1.005`` for USD fails there with a reason.

Strictness (docs/reliability.md#f23): unknown fields are rejected; integers are real integers (no
``true``, no ``2.0``, no ``"2"``); times are RFC 3339 strings within the supported range
(:mod:`ledger.domain.timestamps`: no ``0``, nothing PostgreSQL or Python cannot hold in UTC);
amounts are finite; text is bounded and may not contain
NUL, other C0 controls except tab/newline/CR, lone surrogates, or bidi override controls.
The number of lines is bounded by ``context={"max_lines": n}`` (default :data:`MAX_LINES`).

Exact decimals: pydantic's JSON parser turns JSON numbers into floats before ``Decimal``, so
``100.0000000000000001`` would silently become ``100``. Parse bodies with `ledger_kernel.wire.codec.parse_json`
(stdlib ``json`` with ``parse_float=Decimal``) and then ``Model.model_validate(obj)``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ledger.domain.money import CURRENCY_EXPONENTS, MAX_MINOR
from ledger.domain.timestamps import Timestamp

__all__ = [
    "MAX_LINES",
    "AddressIn",
    "CancelOrder",
    "Command",
    "DeleteOrder",
    "DispatchShipment",
    "ItemIn",
    "MarkDelivered",
    "PlaceOrder",
    "QuantityIn",
    "RecordPayment",
    "RestockItems",
    "UpdateOrder",
]

MAX_LINES = 500
_HARD_MAX_LINES = 10_000
#: The lines bound the models state in their JSON Schema; the API documents its own `max_lines` instead.
HARD_MAX_LINES = _HARD_MAX_LINES
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _clean_text(value: str) -> str:
    for ch in value:
        code = ord(ch)
        if (code < 0x20 and ch not in "\t\n\r") or code == 0x7F:
            raise ValueError(f"control character U+{code:04X} is not allowed")
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError("lone surrogate code point is not allowed (invalid Unicode)")
        if ch in _BIDI_CONTROLS:
            raise ValueError(f"bidirectional control character U+{code:04X} is not allowed")
    return value


_CLEAN = AfterValidator(_clean_text)
#: What `_clean_text` refuses, as JSON Schema patterns (ECMA-262), so the document says it too.
_BANNED = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u202a-\u202e\u2066-\u2069"
TEXT_PATTERN = f"^[^{_BANNED}]*$"
# Python's `isspace` is wider than ECMA-262's `\s`: the extra spaces are listed.
_SPACE = r"\s\u001c-\u001f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
URL_PATTERN = f"^[hH][tT][tT][pP][sS]?://[^{_SPACE}{_BANNED}]*$"
EMAIL_PATTERN = f"^[^{_SPACE}{_BANNED}]+@[^@{_SPACE}{_BANNED}]*\\.[^@{_SPACE}{_BANNED}]*$"


def _documented(pattern: str) -> Any:
    """Schema-only metadata: the validators above enforce it (with their own messages)."""
    return Field(json_schema_extra={"pattern": pattern})


def _bounded(max_length: int, min_length: int = 1) -> StringConstraints:
    return StringConstraints(strict=True, min_length=min_length, max_length=max_length)


_TEXT = _documented(TEXT_PATTERN)
Ident = Annotated[str, _bounded(128), _CLEAN, _TEXT]
Name = Annotated[str, _bounded(255), _CLEAN, _TEXT]
Note = Annotated[str, _bounded(5000, 0), _CLEAN, _TEXT]
Tag = Annotated[str, _bounded(255), _CLEAN, _TEXT]
Status = Annotated[str, _bounded(64), _CLEAN, _TEXT]
Phone = Annotated[str, _bounded(32), _CLEAN, _TEXT]
PostalCode = Annotated[str, _bounded(32), _CLEAN, _TEXT]
StateCode = Annotated[str, _bounded(16), _CLEAN, _TEXT, AfterValidator(str.upper)]


def _check_url(value: str) -> str:
    if not value.lower().startswith(("https://", "http://")) or any(c.isspace() for c in value):
        raise ValueError("must be an http(s) URL without spaces")
    return value


Url = Annotated[str, _bounded(2048), _CLEAN, AfterValidator(_check_url), _documented(URL_PATTERN)]


def _check_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in value):
        raise ValueError("must be an email address")
    return value


Email = Annotated[str, _bounded(254), _CLEAN, AfterValidator(_check_email), _documented(EMAIL_PATTERN)]


def _check_currency(value: str) -> str:
    upper = value.upper()
    if upper not in CURRENCY_EXPONENTS:
        raise ValueError(f"{value!r} is not an active ISO 4217 currency code")
    return upper


_CURRENCY_CODES: list[Any] = [*sorted(CURRENCY_EXPONENTS), *sorted(c.lower() for c in CURRENCY_EXPONENTS)]
_CURRENCY_DOC = Field(json_schema_extra={"enum": _CURRENCY_CODES})
Currency = Annotated[
    str,
    StringConstraints(strict=True, min_length=3, max_length=3),
    AfterValidator(_check_currency),
    _CURRENCY_DOC,
]


def _check_money(value: Decimal) -> Decimal:
    # Coarse bound here (no currency yet); decide() does the exact, currency-aware check.
    if value.adjusted() > 15 or abs(value) > MAX_MINOR:
        raise ValueError("amount is too large")
    return value


#: A money string: ASCII decimal digits only, an optional sign, point and exponent. Python's
#: ``Decimal`` alone also takes ``"1_000"``, Arabic-Indic digits (``"١٠٠"``) and padding, which a
#: ledger must not read as amounts (what other systems would make of them differs).
MONEY_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$"
_MONEY_RE = re.compile(MONEY_PATTERN)
#: The strings of amounts that are not below zero (`-0` is zero), for the document.
NON_NEGATIVE_MONEY_PATTERN = r"^(\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)|-0*(\.0*)?)([eE][+-]?[0-9]{1,4})?$"


def _strict_money_text(value: object) -> object:
    if isinstance(value, str) and not _MONEY_RE.fullmatch(value):
        raise ValueError("an amount must be a decimal number of ASCII digits, e.g. 19.95")
    return value


def _money_schema(bound: dict[str, int], pattern: str) -> WithJsonSchema:
    """JSON Schema keywords (``minimum``/``exclusiveMinimum``), not pydantic's ``ge``/``gt``."""
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", **bound, "maximum": MAX_MINOR},
                {"type": "string", "pattern": pattern, "description": "the same, as a string"},
            ],
            "description": "Decimal major units of the order's currency (no more decimals than it has)",
        }
    )


Money = Annotated[
    Decimal, Field(allow_inf_nan=False), BeforeValidator(_strict_money_text), AfterValidator(_check_money)
]
NonNegativeMoney = Annotated[Money, Field(ge=0), _money_schema({"minimum": 0}, NON_NEGATIVE_MONEY_PATTERN)]
PositiveMoney = Annotated[
    Money, Field(gt=0), _money_schema({"exclusiveMinimum": 0}, NON_NEGATIVE_MONEY_PATTERN)
]
Quantity = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
ExternalNumber = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
CountryCode = Annotated[
    str, StringConstraints(strict=True, pattern=r"^[A-Za-z]{2,3}$"), AfterValidator(str.upper)
]
DiscountType = Literal["percentage", "fixedAmount", "freeShipping"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _check_lines(value: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
    if value is None:  # `"items": null` on an update is refused by the model, with a reason
        return value
    limit = (info.context or {}).get("max_lines", MAX_LINES)
    if len(value) > limit:
        raise ValueError(f"at most {limit} lines per request")
    return value


class AddressIn(_Body):
    """A postal address; ``country_code`` is ISO 3166-1 alpha-2 or alpha-3 (kept as given, upper-cased)."""

    first_name: Name | None = None
    last_name: Name | None = None
    company: Name | None = None
    phone: Phone | None = None
    country: Name | None = None
    country_code: CountryCode | None = None
    state: Name | None = None
    state_code: StateCode | None = None
    city: Name | None = None
    address: Name | None = None
    address2: Name | None = None
    postal_code: PostalCode | None = None


class ItemIn(_Body):
    """One order line as Omneo sends it. ``line_id`` is generated when absent.

    ``price_sell`` (the unit price paid) defaults to ``price_current`` and vice versa; one is
    required. ``price_original`` defaults to ``price_current``. ``discount`` and ``tax`` are
    per line (not per unit). ``currency``, when given, must be the order's.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=False,
        json_schema_extra={  # `_a_price` below, stated in the schema
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("price_sell", "price_current")
            ]
        },
    )

    line_id: Ident | None = None
    name: Name
    quantity: Quantity
    price_sell: NonNegativeMoney | None = None
    price_current: NonNegativeMoney | None = None
    price_original: NonNegativeMoney | None = None
    discount: NonNegativeMoney | None = None
    tax: NonNegativeMoney | None = None
    currency: Currency | None = None
    sku: Ident | None = None
    product_id: ExternalNumber | Ident | None = None
    product_variant_id: ExternalNumber | Ident | None = None
    variant_title: Name | None = None
    categories: Annotated[list[Ident], Field(max_length=100)] = []
    image_url: Url | None = None
    product_url: Url | None = None
    vendor: Name | None = None
    weight_grams: Annotated[StrictInt, Field(ge=0, le=10**9)] | None = None
    tags: Annotated[list[Tag], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _a_price(self) -> ItemIn:
        if self.price_sell is None and self.price_current is None:
            raise ValueError("price_sell or price_current is required")
        return self


class _OrderFields(_Body):
    """Fields shared by PlaceOrder and UpdateOrder."""

    status: Status | None = None
    currency: Currency | None = None
    total: NonNegativeMoney | None = None
    subtotal: NonNegativeMoney | None = None
    discount: NonNegativeMoney | None = None
    tax: NonNegativeMoney | None = None
    shipping: NonNegativeMoney | None = None
    tax_included: StrictBool | None = None
    profile_id: Ident | None = None
    email: Email | None = None
    phone: Phone | None = None
    first_name: Name | None = None
    last_name: Name | None = None
    billing_address: AddressIn | None = None
    shipping_address: AddressIn | None = None
    payment_method: Name | None = None
    shipping_method: Name | None = None
    discount_code: Name | None = None
    discount_type: DiscountType | None = None
    tags: Annotated[list[Tag], Field(max_length=100)] | None = None
    note: Note | None = None
    items: Annotated[list[ItemIn], Field(max_length=_HARD_MAX_LINES)] | None = None

    _lines_limit = field_validator("items")(_check_lines)


class PlaceOrder(_OrderFields):
    """``POST /api/v3/orders``. ``status`` defaults to ``pending``; ``currency`` to decide's default.

    ``placed_at`` lets a producer record when the order was really placed (backfills).
    """

    external_id: Ident | None = None
    source: Ident | None = None
    placed_at: Timestamp | None = None
    items: Annotated[list[ItemIn], Field(min_length=1, max_length=_HARD_MAX_LINES)]


_NOT_NULL = (
    "status",
    "currency",
    "total",
    "subtotal",
    "discount",
    "tax",
    "shipping",
    "tax_included",
    "items",
)


class UpdateOrder(_OrderFields):
    """``PUT /api/v3/orders/{id}``: a partial update (only the fields present change).

    ``items`` replaces the whole list of lines. An address replaces the whole address. A
    detail field sent as ``null`` is cleared; money, status, currency and items cannot be null.
    """

    @model_validator(mode="after")
    def _no_nulls(self) -> UpdateOrder:
        nulls = [name for name in _NOT_NULL if name in self.model_fields_set and getattr(self, name) is None]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null")
        if self.items is not None and not self.items:
            raise ValueError("items: an order needs at least one item")
        return self


class RecordPayment(_Body):
    """``POST /orders/{id}/payments``: money moved (or an authorisation was placed or released)."""

    kind: Literal["authorized", "captured", "refunded", "voided"]
    amount: PositiveMoney
    currency: Currency | None = None
    method: Name | None = None
    reference: Ident | None = None


class QuantityIn(_Body):
    """A quantity of one line, named by ``line_id`` or by ``sku`` (exactly one of them)."""

    line_id: Ident | None = None
    sku: Ident | None = None
    quantity: Quantity

    @model_validator(mode="after")
    def _one_key(self) -> QuantityIn:
        if (self.line_id is None) == (self.sku is None):
            raise ValueError("give exactly one of line_id or sku")
        return self


_QuantityLines = Annotated[list[QuantityIn], Field(min_length=1, max_length=_HARD_MAX_LINES)]


class DispatchShipment(_Body):
    """``POST /orders/{id}/shipments``. ``shipment_id`` defaults to S1, S2... per order."""

    shipment_id: Ident | None = None
    lines: _QuantityLines
    carrier: Name | None = None
    tracking_code: Name | None = None
    tracking_url: Url | None = None
    location_id: Ident | None = None
    dispatched_at: Timestamp | None = None

    _lines_limit = field_validator("lines")(_check_lines)


class MarkDelivered(_Body):
    """``POST /orders/{id}/shipments/{shipment_id}/delivered`` (the API fills ``shipment_id``)."""

    shipment_id: Ident
    delivered_at: Timestamp | None = None


class CancelOrder(_Body):
    reason: Note | None = None
    canceled_at: Timestamp | None = None


class DeleteOrder(_Body):
    reason: Note | None = None


class RestockItems(_Body):
    """Quantities back in stock: returns of shipped lines, or unshipped lines of a canceled order."""

    lines: _QuantityLines
    location_id: Ident | None = None
    reason: Note | None = None

    _lines_limit = field_validator("lines")(_check_lines)


Command = (
    PlaceOrder
    | UpdateOrder
    | RecordPayment
    | DispatchShipment
    | MarkDelivered
    | CancelOrder
    | DeleteOrder
    | RestockItems
)

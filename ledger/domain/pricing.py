"""Turning request items and amounts (decimal major units) into lines and Amounts (minor units).

Errors are collected per field, so one response names every bad amount at once.

How totals must add up (decided here, docs/reliability.md#f24):
- ``subtotal``, when given, must equal the sum of the lines at ``price_sell``; otherwise it is
  that sum.
- When a request gives lines or any part of the breakdown (subtotal, discount, shipping, tax,
  tax_included), the total is ``subtotal - discount + shipping (+ tax when prices exclude it)``,
  with missing parts taken from the order as it was; a ``total`` given with them must equal it.
- A bare ``total`` (an update with no lines and no breakdown, like Omneo's
  ``{"status": "processing", "total": 249.90}``) is the producer's authoritative figure: it is
  accepted and the difference from the breakdown is kept as ``Amounts.adjustment``, apportioned
  across Transactions like shipping. The next update with lines or breakdown recomputes it.
- A total is never negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from ledger.domain.commands import ItemIn, UpdateOrder
from ledger.domain.commands import PlaceOrder as PlaceOrderIn
from ledger.domain.errors import DomainError, FieldError
from ledger.domain.money import MoneyError, to_major, to_minor
from ledger.domain.values import Amounts, LineItem

__all__ = ["MoneyReader", "build_amounts", "build_lines"]

_BREAKDOWN = ("subtotal", "discount", "tax", "shipping")


class MoneyReader:
    """Converts amounts for one currency, collecting field errors instead of failing on the first."""

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.errors: list[FieldError] = []

    def minor(self, value: Decimal, loc: tuple[str | int, ...]) -> int:
        try:
            return to_minor(value, self.currency)
        except MoneyError as exc:
            self.errors.append(FieldError(loc, exc.code, exc.reason))
            return 0

    def currency_matches(self, given: str | None, loc: tuple[str | int, ...]) -> None:
        if given is not None and given != self.currency:
            self.errors.append(
                FieldError(
                    loc, "mixed_currency", f"{given} given on a {self.currency} order; one currency per order"
                )
            )

    def raise_if_errors(self) -> None:
        if self.errors:
            codes = {e.code for e in self.errors}
            code = codes.pop() if len(codes) == 1 else "invalid_money"
            raise DomainError(code, "; ".join(f"{_loc(e.loc)}: {e.msg}" for e in self.errors), self.errors)

    def major(self, minor: int) -> str:
        return f"{to_major(minor, self.currency)} {self.currency}"


def _loc(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _key(item: ItemIn | LineItem) -> tuple[object, ...]:
    variant = item.product_variant_id if isinstance(item, ItemIn) else item.variant_id
    return (variant, item.sku, item.name)


def build_lines(
    items: Sequence[ItemIn], money: MoneyReader, previous: Sequence[LineItem] = ()
) -> tuple[LineItem, ...]:
    """Lines from request items. A missing ``line_id`` reuses the id of an unclaimed previous
    line for the same (variant, sku, name), else takes the next free ``L<n>``: deterministic,
    and an unchanged item list keeps its ids (so a repeated PUT is a no-op)."""
    explicit = {item.line_id for item in items if item.line_id is not None}
    unclaimed: dict[tuple[object, ...], list[str]] = {}
    for line in previous:
        if line.line_id not in explicit:
            unclaimed.setdefault(_key(line), []).append(line.line_id)
    taken = set(explicit) | {line.line_id for line in previous}
    counter = 0
    seen: set[str] = set()
    out: list[LineItem] = []
    for i, item in enumerate(items):
        loc: tuple[str | int, ...] = ("items", i)
        money.currency_matches(item.currency, (*loc, "currency"))
        line_id = item.line_id
        if line_id is None:
            reusable = unclaimed.get(_key(item))
            if reusable:
                line_id = reusable.pop(0)
            else:
                counter += 1
                while f"L{counter}" in taken:
                    counter += 1
                line_id = f"L{counter}"
                taken.add(line_id)
        if line_id in seen:
            money.errors.append(
                FieldError((*loc, "line_id"), "duplicate_line_id", f"line_id {line_id!r} repeats")
            )
        seen.add(line_id)
        prices = {
            name: money.minor(value, (*loc, name))
            for name in ("price_sell", "price_current", "price_original", "discount", "tax")
            if (value := getattr(item, name)) is not None
        }
        # Defaults only copy what was given, so each bad amount is reported once, where it was sent.
        sell = prices.get("price_sell", prices.get("price_current"))
        if sell is None:  # ItemIn's own validator already refuses this
            money.errors.append(FieldError((*loc, "price_sell"), "missing", "price_sell is required"))
            continue
        current = prices.get("price_current", sell)
        out.append(
            LineItem(
                line_id=line_id,
                name=item.name,
                quantity=item.quantity,
                price_sell=sell,
                price_current=current,
                price_original=prices.get("price_original", current),
                discount=prices.get("discount", 0),
                tax=prices.get("tax", 0),
                sku=item.sku,
                product_id=item.product_id,
                variant_id=item.product_variant_id,
                variant_title=item.variant_title,
                categories=tuple(item.categories),
                image_url=item.image_url,
                product_url=item.product_url,
                vendor=item.vendor,
                weight_grams=item.weight_grams,
                tags=tuple(item.tags),
            )
        )
    return tuple(out)


def build_amounts(
    command: PlaceOrderIn | UpdateOrder,
    lines: Sequence[LineItem],
    money: MoneyReader,
    previous: Amounts | None,
) -> Amounts:
    """Amounts for ``lines`` per the rules in the module docstring; raises on the first money error."""
    given = {
        name: money.minor(value, (name,))
        for name in (*_BREAKDOWN, "total")
        if (value := getattr(command, name)) is not None
    }
    money.raise_if_errors()
    lines_value = sum(line.value for line in lines)
    breakdown_given = command.items is not None or command.tax_included is not None
    breakdown_given = breakdown_given or any(name in given for name in _BREAKDOWN)
    if previous is not None and not breakdown_given:
        amounts = previous.model_copy(update={"total": given.get("total", previous.total)})
    else:
        tax_included = command.tax_included
        if tax_included is None:
            tax_included = previous.tax_included if previous is not None else True
        subtotal = given.get("subtotal", lines_value)
        if subtotal != lines_value:
            raise DomainError(
                "subtotal_mismatch",
                f"subtotal {money.major(subtotal)} is not the sum of the lines {money.major(lines_value)}",
                [FieldError(("subtotal",), "subtotal_mismatch", f"expected {money.major(lines_value)}")],
            )

        def part(name: str) -> int:
            return given.get(name, getattr(previous, name) if previous is not None else 0)

        amounts = Amounts(
            subtotal=subtotal,
            discount=part("discount"),
            tax=part("tax"),
            shipping=part("shipping"),
            tax_included=tax_included,
            total=0,
        )
        expected = amounts.expected_total
        total = given.get("total", expected)
        if total != expected:
            raise DomainError(
                "total_mismatch",
                f"total {money.major(total)} does not add up: subtotal - discount + shipping"
                f"{'' if tax_included else ' + tax'} = {money.major(expected)}",
                [FieldError(("total",), "total_mismatch", f"expected {money.major(expected)}")],
            )
        amounts = amounts.model_copy(update={"total": total})
    if amounts.total < 0:
        raise DomainError(
            "negative_total",
            f"the order total would be {money.major(amounts.total)}",
            [FieldError(("total",), "negative_total", "the total cannot be negative")],
        )
    return amounts

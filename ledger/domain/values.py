"""Immutable value objects shared by events and the folded :class:`~ledger.domain.state.Order`.

They are frozen pydantic models so an event decoded from the store can be put into the state
as is: ``evolve`` never copies or re-validates them (that is what keeps folding fast). Money is
``int`` minor units in the order's currency (see :mod:`ledger.domain.money`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Address", "Amounts", "Customer", "LineItem", "OrderDetails", "QuantityLine", "ValueModel"]


class ValueModel(BaseModel):
    """Frozen, closed model: unknown keys in stored data are a bug, not a forward-compat hint."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Customer(ValueModel):
    """Who placed the order (Omneo ``profile_id`` plus contact details)."""

    profile_id: str | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None


class Address(ValueModel):
    """Billing or shipping address; ``country_code`` is ISO 3166-1 alpha-2 or alpha-3 as given."""

    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    phone: str | None = None
    country: str | None = None
    country_code: str | None = None
    state: str | None = None
    state_code: str | None = None
    city: str | None = None
    address: str | None = None
    address2: str | None = None
    postal_code: str | None = None


class LineItem(ValueModel):
    """One order line. Prices are per unit; ``discount`` and ``tax`` are for the whole line.

    The line's value is ``price_sell * quantity``: what the customer pays for it before
    order-level amounts (shipping, order discount, tax when excluded, adjustments).
    """

    line_id: str
    name: str
    quantity: int
    price_sell: int
    price_current: int
    price_original: int
    discount: int = 0
    tax: int = 0
    sku: str | None = None
    product_id: int | str | None = None
    variant_id: int | str | None = None
    variant_title: str | None = None
    categories: tuple[str, ...] = ()
    image_url: str | None = None
    product_url: str | None = None
    vendor: str | None = None
    weight_grams: int | None = None
    tags: tuple[str, ...] = ()

    @property
    def value(self) -> int:
        """Line total at the selling price, in minor units."""
        return self.price_sell * self.quantity


class Amounts(ValueModel):
    """Order-level money. ``total`` is what the customer owes and is authoritative.

    ``adjustment`` is whatever the producer's total carries beyond the breakdown (e.g. a bare
    Omneo ``total`` update): apportioned across Transactions like shipping. ``tax_included``
    defaults to True: Omneo's home market (Australia) quotes GST-inclusive prices.
    """

    subtotal: int
    total: int
    discount: int = 0
    tax: int = 0
    shipping: int = 0
    tax_included: bool = True

    @property
    def expected_total(self) -> int:
        """The total implied by the breakdown."""
        return self.subtotal - self.discount + self.shipping + (0 if self.tax_included else self.tax)

    @property
    def adjustment(self) -> int:
        return self.total - self.expected_total


class QuantityLine(ValueModel):
    """A quantity of one order line (shipped or restocked)."""

    line_id: str
    quantity: int


class OrderDetails(ValueModel):
    """The order's non-money details, changed together by OrderDetailsChanged."""

    customer: Customer = Customer()
    billing_address: Address | None = None
    shipping_address: Address | None = None
    payment_method: str | None = None
    shipping_method: str | None = None
    discount_code: str | None = None
    discount_type: str | None = None
    tags: tuple[str, ...] = ()
    note: str | None = None

"""Transactions derived from shipments: one pure function for the projection and the Omneo worker.

Omneo wants one immutable Transaction per completed (fulfilled and paid) part of an order.
Rules (docs/architecture.md#transactions):
- Shipments are taken in dispatch order. Shipment *i* becomes a Transaction once captured
  payments cover the value of shipments 1..i together (a prefix: a later shipment never
  jumps ahead of an earlier unpaid one). Captures only grow, and lines and amounts are frozen
  once anything shipped (see ``decide``), so a Transaction never disappears or changes value.
- A Transaction's total is its lines at ``price_sell`` plus its share of the order-level
  amounts (``total - Σ line values``: shipping, order discount, tax when excluded, any
  adjustment). Shares are apportioned by *cumulative* shipped value with half-even rounding:
  share_i = R(L·C_i/S) - R(L·C_(i-1)/S). When everything shipped C_n = S, so the shares add
  up to L exactly and the last Transaction has taken the rounding remainder: the Transactions
  of a fully shipped and paid order add up to its total to the minor unit. (With all lines
  free, S = 0, quantities are the weights instead.)
- ``transacted_at`` is when the sale completed: the later of the dispatch time and the
  capture that covered it.
- ``external_id`` is ``"{order id}:{shipment id}"``: deterministic, so Omneo's
  ``update-create`` is idempotent, and built on the ledger id, which is unique across sources.
- A full refund (refunded >= captured > 0) marks every Transaction ``voided``.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from ledger.domain.state import Order, PaymentEntry

__all__ = ["Transaction", "TransactionLine", "derive_transactions", "transaction_external_id"]


class TransactionLine(NamedTuple):
    """One shipped line of a Transaction (NamedTuples: built for every order a projection maps,
    several times cheaper than frozen dataclasses, equally immutable)."""

    line_id: str
    name: str
    sku: str | None
    product_id: int | str | None
    variant_id: int | str | None
    quantity: int
    price_sell: int
    value: int


class Transaction(NamedTuple):
    """A paid shipment. Money in minor units of ``currency``."""

    external_id: str
    order_id: UUID
    order_external_id: str | None
    shipment_id: str
    sequence: int
    currency: str
    lines: tuple[TransactionLine, ...]
    lines_total: int
    order_amounts_share: int
    total: int
    location_id: str | None
    dispatched_at: datetime
    transacted_at: datetime
    voided: bool


def transaction_external_id(order_id: UUID, shipment_id: str) -> str:
    return f"{order_id}:{shipment_id}"


def _round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded half to even, in integers."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def derive_transactions(order: Order) -> list[Transaction]:
    if not order.shipments:  # nothing shipped, nothing to derive (most orders, most of the time)
        return []
    lines = {line.line_id: line for line in order.lines}
    weight_total = lines_total = sum([line.price_sell * line.quantity for line in order.lines])
    by_quantity = weight_total == 0
    if by_quantity:
        weight_total = sum([line.quantity for line in order.lines])
    order_level = order.amounts.total - lines_total
    payments = order.payments
    captures = [e for e in payments.entries if e.kind == "captured"]
    voided = payments.captured > 0 and payments.refunded >= payments.captured
    # Every Transaction of the order shares these (positional construction: a projection
    # derives the Transactions of every order it maps, so this loop is hot).
    order_id, order_key, external_id, currency = order.id, str(order.id), order.external_id, order.currency

    out: list[Transaction] = []
    cumulative_weight = 0
    previous_share = 0
    needed = 0
    for sequence, shipment in enumerate(order.shipments, start=1):
        tx_lines: list[TransactionLine] = []
        value = 0
        for q in shipment.lines:
            line = lines[q.line_id]
            line_value = line.price_sell * q.quantity
            tx_lines.append(
                TransactionLine(
                    line.line_id, line.name, line.sku, line.product_id, line.variant_id,
                    q.quantity, line.price_sell, line_value,
                )
            )  # fmt: skip
            value += line_value
            cumulative_weight += q.quantity if by_quantity else line_value
        share_to_here = _round_half_even(order_level * cumulative_weight, weight_total) if weight_total else 0
        share = share_to_here - previous_share
        previous_share = share_to_here
        total = value + share
        needed += total
        covered_at = _covered_at(captures, needed, shipment.dispatched_at)
        if covered_at is None:
            break
        dispatched_at = shipment.dispatched_at
        out.append(
            Transaction(
                f"{order_key}:{shipment.shipment_id}",  # transaction_external_id
                order_id, external_id, shipment.shipment_id, sequence, currency, tuple(tx_lines),
                value, share, total, shipment.location_id, dispatched_at,
                covered_at if covered_at > dispatched_at else dispatched_at, voided,
            )
        )  # fmt: skip
    return out


def _covered_at(captures: list[PaymentEntry], needed: int, dispatched_at: datetime) -> datetime | None:
    """Time of the capture that brought the running captured sum to ``needed`` (None: not yet)."""
    if needed <= 0:
        return dispatched_at
    running = 0
    for entry in captures:
        running += entry.amount
        if running >= needed:
            return entry.at
    return None

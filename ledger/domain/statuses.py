"""Derived payment and fulfilment statuses (the Omnisend v3 enums), never stored by producers.

Rules (docs/connectors.md#decisions, with the edge cases decided here):
- payment: ``refunded`` once refunds reach what was captured (> 0); ``partiallyRefunded`` for
  0 < refunded < captured; with nothing captured: ``voided`` when an authorisation was
  released and none is outstanding, else ``awaitingPayment`` (a zero-total order is ``paid``);
  otherwise ``paid`` when captured >= total, ``partiallyPaid`` below.
- fulfilment: ``restocked`` when something was restocked and every shipped quantity came back
  (for an unshipped canceled order: anything restocked); ``delivered`` when every line shipped
  and every shipment was delivered; ``fulfilled`` when every line shipped; ``inProgress`` when
  something shipped or the producer's status says work started (``processing`` and friends);
  else ``unfulfilled``.
"""

from __future__ import annotations

from typing import Literal

from ledger.domain.state import Order

__all__ = [
    "IN_PROGRESS_STATUSES",
    "FulfillmentStatus",
    "PaymentStatus",
    "fulfillment_status",
    "payment_status",
]

PaymentStatus = Literal["awaitingPayment", "partiallyPaid", "paid", "partiallyRefunded", "refunded", "voided"]
FulfillmentStatus = Literal["unfulfilled", "inProgress", "fulfilled", "delivered", "restocked"]

IN_PROGRESS_STATUSES = frozenset(
    {"processing", "in_progress", "inprogress", "in progress", "picking", "packing", "packed", "fulfilling"}
)


def payment_status(order: Order) -> PaymentStatus:
    p = order.payments
    if p.captured > 0 and p.refunded >= p.captured:
        return "refunded"
    if p.refunded > 0:
        return "partiallyRefunded"
    if p.captured == 0:
        if p.voided > 0 and p.voided >= p.authorized:
            return "voided"
        return "paid" if order.amounts.total == 0 else "awaitingPayment"
    return "paid" if p.captured >= order.amounts.total else "partiallyPaid"


def fulfillment_status(order: Order) -> FulfillmentStatus:
    # Plain loops, not ``all(genexpr)``: this runs for every event the relay publishes and every
    # order a projection maps, and an abandoned generator costs more than the whole check.
    shipped = order.shipped_quantities()
    if order.restocks:
        restocked = order.restocked_quantities()
        for line_id, qty in shipped.items():
            if restocked.get(line_id, 0) < qty:
                break
        else:
            return "restocked"
    lines = order.lines
    if lines:
        for line in lines:
            if shipped.get(line.line_id, 0) < line.quantity:
                break
        else:
            for s in order.shipments:
                if s.delivered_at is None:
                    return "fulfilled"
            return "delivered"
    if shipped or order.status.strip().lower() in IN_PROGRESS_STATUSES:
        return "inProgress"
    return "unfulfilled"

"""Whether a destination can take an order at all: "not applicable" instead of parked.

Why a third outcome beside delivered and parked: some orders can never be taken by a
destination as they stand. Omnisend attaches every order to a contact and needs an email or a
phone for it (v3 `POST /orders`: "email or/and phone or contactID are required"; events: the
`contact` needs one), and a walk-in POS sale often has neither. Parking such an order made it
wait forever for a redrive that cannot succeed, and buried the parked orders an operator must
look at. A not-applicable order is recorded with its reason (delivery state, inbox outcome,
`ledger_fanout_not_applicable_total`, `ledger fanout status`), its events are done with, and
the first later event that makes it applicable (an email added) delivers the order as it then
is: every mapping works from the order's current state, so nothing is lost.

The rules themselves live with each vendor's mapping (`not_applicable(order)`); this module
holds the value they return.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NotApplicable"]


@dataclass(frozen=True, slots=True)
class NotApplicable:
    """Why a destination cannot take an order: `code` is a metric label (a fixed, small set),
    `reason` the sentence operators read."""

    code: str
    reason: str

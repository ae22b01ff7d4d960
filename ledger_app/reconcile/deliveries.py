"""A destination's side: every published version of an order delivered, or the order parked with a reason.

The fan-out advances an order's `last_version` when it delivers, coalesces, finds nothing to send
or records the order as not applicable (docs/architecture.md#fanout), so an order whose published
versions are all handled has `last_version` at least the last one published. Otherwise its queue
must be parked, with a reason, at the version after the last delivered one: an order behind
without that was skipped or rolled back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from consumers.fanout.delivery_store import delivery_positions
from ledger_app.reconcile.log import OrderSpan
from ledger_app.reconcile.report import UNDELIVERED, Mismatch, destination_place


@dataclass
class DeliveryCheck:
    mismatches: list[Mismatch] = field(default_factory=list)
    orders: int = 0
    delivered: int = 0
    parked: int = 0
    not_applicable: int = 0


async def check_destination(
    pool: asyncpg.Pool, destination: str, spans: Sequence[OrderSpan]
) -> DeliveryCheck:
    out = DeliveryCheck()
    expected = [s for s in spans if s.published >= s.first]
    if not expected:
        return out
    place = destination_place(destination)
    known = await delivery_positions(pool, destination, [s.order_id for s in expected])
    for span in expected:
        out.orders += 1
        last, not_applicable, parked_version, reason = known.get(span.order_id, (0, None, None, None))
        if last >= span.published:
            out.delivered += 1
            out.not_applicable += not_applicable is not None
            continue
        if parked_version is not None and parked_version <= last + 1 and reason:
            out.parked += 1
            continue
        parked = (
            ""
            if parked_version is None
            else f"; parked from version {parked_version} ({reason or 'no reason'})"
        )
        out.mismatches.append(
            Mismatch(
                UNDELIVERED,
                place,
                span.order_id,
                f"delivered up to version {last} of {span.published} published, not parked{parked}",
            )
        )
    return out

"""Return Transactions for Omneo: one per partial refund after a sale, capped at what was sold."""

from __future__ import annotations

from decimal import Decimal

from consumers.omneo.mapping import OmneoState, map_batch
from tests.unit.mapping.story import OrderStory, parse


def _upserts(story: OrderStory, envelopes: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    calls = map_batch([parse(e) for e in envelopes], OmneoState("7", {}))
    return {c.key: c.body or {} for c in calls if c.kind == "omneo.transaction.upsert"}


def test_a_refund_larger_than_what_was_shipped_takes_back_only_the_shipped_spend() -> None:
    story = OrderStory()
    envelopes = [
        *story.place(),
        *story.pay("20.00"),
        *story.ship("S1", "L1"),
        *story.pay("15.00", kind="refunded"),
    ]
    bodies = _upserts(story, envelopes)
    ret = bodies[f"{story.order_id}:refund:1"]
    assert ret["total"] == Decimal("-10.00"), "S1 recorded 10.00 of spend; the unshipped L2 none"
    assert ret["location_id"] == "WH1", "booked where the sale was, when the refund names no place"
    assert "is_void" not in bodies[f"{story.order_id}:S1"]


def test_no_return_transaction_before_any_sale() -> None:
    story = OrderStory()
    envelopes = [*story.place(), *story.pay("20.00"), *story.pay("5.00", kind="refunded")]
    assert _upserts(story, envelopes) == {}

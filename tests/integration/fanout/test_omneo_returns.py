"""Partial refunds and returns reach Omneo through the real worker, so loyalty is not over-credited.

Each partial refund after a sale becomes a return Transaction (negative total, the returned
lines at negative quantities) linked to the Omneo order; a later full refund voids the sales
and the returns alike (docs/connectors.md#omneo-returns).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from ledger.domain.commands import RestockItems
from tests.integration.fanout.support import (
    inbox_count,
    make_settings,
    new_topic,
    publish,
    sandbox,
    wait_for,
    worker,
)
from tests.unit.mapping.story import OrderStory

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]


def _restock(story: OrderStory, line_id: str) -> list[dict[str, Any]]:
    return story.run(
        RestockItems.model_validate(
            {"lines": [{"line_id": line_id, "quantity": 1}], "location_id": "WH1", "reason": "returned"}
        )
    )


def _kept(transactions: dict[str, dict[str, Any]]) -> Decimal:
    """What Omneo counts as the shopper's spend on this order: the Transactions not voided."""
    return sum((Decimal(str(t["total"])) for t in transactions.values() if not t.get("is_void")), Decimal(0))


async def test_a_return_and_a_partial_refund_reach_omneo_and_a_full_refund_voids_them_all(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    sale = [*story.place(), *story.pay("20.00"), *story.ship("S1", "L1", "L2")]
    returned = [*_restock(story, "L1"), *story.pay("10.00", kind="refunded")]
    goodwill = story.pay("4.00", kind="refunded")
    rest = story.pay("6.00", kind="refunded")
    async with sandbox("omneo") as omneo:
        settings = make_settings(database_url, kafka_bootstrap, topic, omneo=omneo)
        async with worker("omneo", settings, pool):
            sent = 0
            states = []
            for envelopes in (sale, returned, goodwill, rest):
                await publish(kafka_bootstrap, topic, envelopes)
                sent += len(envelopes)

                async def caught_up(n: int = sent) -> bool:
                    return await inbox_count(pool, "omneo") >= n

                await wait_for(caught_up, what=f"{sent} events delivered")
                states.append((await omneo.state())["transactions"])
        log = await omneo.requests()
    assert [r for r in log if r["status"] >= 400] == [], "Omneo took every call"
    assert [_kept(s) for s in states] == [Decimal("20.00"), Decimal("10.00"), Decimal("6.00"), Decimal(0)]
    by_external = {t["external_id"]: t for t in states[1].values()}
    ret = by_external[f"{story.order_id}:refund:1"]
    assert Decimal(str(ret["total"])) == Decimal("-10.00")
    assert [(i["external_id"], i["quantity"]) for i in ret["items"]] == [("L1", -1)]
    assert ret["order_id"] == by_external[f"{story.order_id}:S1"]["order_id"]
    money_only = {t["external_id"]: t for t in states[2].values()}[f"{story.order_id}:refund:2"]
    assert [(i["name"], i["quantity"]) for i in money_only["items"]] == [("Refund", -1)]
    final = {t["external_id"]: t for t in states[3].values()}
    assert sorted(final) == sorted(
        [f"{story.order_id}:S1", f"{story.order_id}:refund:1", f"{story.order_id}:refund:2"]
    ), "the last refund completes the refund: no return of its own, everything voided"
    assert all(t["is_void"] for t in final.values())

"""The split-shipment story end to end: Kafka -> workers -> Omneo and Omnisend sandboxes."""

from __future__ import annotations

from typing import cast

import asyncpg
import pytest

from consumers.fanout.operations import redrive
from tests.harness.kafka import produce
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


async def test_split_shipment_reaches_both_destinations(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    steps = [
        story.place(),
        story.update(status="processing"),
        story.pay("20.00"),
        story.ship("S1", "L1"),
        story.ship("S2", "L2"),
    ]
    async with sandbox("omneo") as omneo, sandbox("omnisend") as omnisend:
        settings = make_settings(database_url, kafka_bootstrap, topic, omneo=omneo, omnisend=omnisend)
        async with worker("omneo", settings, pool), worker("omnisend", settings, pool):
            sent = 0
            for envelopes in steps:  # one step at a time, so each Omnisend state is visible
                await publish(kafka_bootstrap, topic, envelopes)
                sent += len(envelopes)

                async def caught_up(n: int = sent) -> bool:
                    return await inbox_count(pool, "omneo") >= n and await inbox_count(pool, "omnisend") >= n

                await wait_for(caught_up, what=f"{sent} events delivered to both")

        omneo_state = await omneo.state()
        orders = list(omneo_state["orders"].values())
        assert len(orders) == 1
        remote_id = orders[0]["id"]
        assert orders[0]["external_id"] == story.order_id
        txs = sorted(omneo_state["transactions"].values(), key=lambda t: t["external_id"])
        assert [t["external_id"] for t in txs] == [f"{story.order_id}:S1", f"{story.order_id}:S2"]
        assert all(t["order_id"] == remote_id for t in txs)
        assert sum(float(t["total"]) for t in txs) == 20.0
        omneo_log = await omneo.requests()
        assert [r for r in omneo_log if r["status"] >= 400] == []
        assert sum(1 for r in omneo_log if r["method"] == "POST" and r["path"] == "/api/v3/orders") == 1

        log = await omnisend.requests()
        assert [r for r in log if r["status"] >= 400] == [], "every Omnisend request valid"
        statuses = [
            r["body"]["fulfillmentStatus"] for r in log if r["body"] and "fulfillmentStatus" in r["body"]
        ]
        assert statuses[0] == "unfulfilled"
        assert "inProgress" in statuses
        assert statuses[-1] == "fulfilled"
        assert statuses.index("inProgress") < len(statuses) - 1
        final = (await omnisend.state())["orders"][story.order_id]
        assert final["paymentStatus"] == "paid"
        assert final["fulfillmentStatus"] == "fulfilled"
        assert final["trackingCode"] == "TRK-S2"
        assert final["shippingAddress"]["countryCode"] == "USA"
        assert next(r["method"] for r in log) == "POST"
        assert {r["method"] for r in log[1:]} <= {"PUT", "PATCH"}


async def test_events_mode_sends_recommended_order_events(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    story.place()
    story.pay("20.00")
    story.ship("S1", "L1")
    story.ship("S2", "L2")
    story.pay("20.00", kind="refunded")
    async with sandbox("omnisend") as omnisend:
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=omnisend, mode="events")
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, topic, story.envelopes)

            async def done() -> bool:
                return await inbox_count(pool, "omnisend") >= 5

            await wait_for(done, what="5 events handled")
        log = await omnisend.requests()
        assert [r["status"] for r in log] == [202] * 4, "valid v5 events, accepted"
        names = [r["body"]["eventName"] for r in log]
        assert names == ["placed order", "paid for order", "order fulfilled", "order refunded"]
        assert len({r["body"]["eventID"] for r in log}) == 4
        assert log[2]["body"]["properties"]["tracking"]["code"] == "TRK-S2"


async def test_unreadable_envelope_parks_its_order_only(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    poisoned, fine = OrderStory(), OrderStory()
    poisoned.place()
    poisoned.pay("20.00")
    fine.place()
    async with sandbox("omneo") as omneo:
        settings = make_settings(database_url, kafka_bootstrap, topic, omneo=omneo)
        async with worker("omneo", settings, pool):
            await publish(kafka_bootstrap, topic, poisoned.envelopes[:1])
            await wait_for(lambda: _handled(pool, 1), what="first event delivered")
            await produce(kafka_bootstrap, topic, [(poisoned.order_id.encode(), b'{"not": "an envelope"')])
            await publish(kafka_bootstrap, topic, poisoned.envelopes[1:] + fine.envelopes)
            await wait_for(lambda: _handled(pool, 2), what="the other order delivered")

            async def queued() -> bool:
                return cast(int, await pool.fetchval("SELECT count(*) FROM fanout_parked")) == 2

            await wait_for(queued, what="poison and the event behind it parked")
        rows = await pool.fetch("SELECT order_id, reason FROM fanout_parked ORDER BY version DESC")
        assert {r["order_id"] for r in rows} == {poisoned.order_id}
        assert any(r["reason"].startswith("unreadable envelope") for r in rows)
        assert len((await omneo.state())["orders"]) == 2
        settings.omneo.max_attempts = 1
        stuck = await redrive(settings, pool, destination="omneo")
        assert [r.stopped is not None and r.stopped.startswith("unreadable") for r in stuck] == [True]
        freed = await redrive(settings, pool, destination="omneo", drop_unreadable=True)
        assert [(r.delivered, r.stopped) for r in freed] == [(1, None)], "the payment behind it flows"
        assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0


async def _handled(pool: asyncpg.Pool, n: int) -> bool:
    return await inbox_count(pool, "omneo") >= n

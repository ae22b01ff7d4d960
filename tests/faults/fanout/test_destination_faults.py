"""Destination faults against the real sandboxes: 429 storms, 503 outages, 401, 422 parking."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import cast

import asyncpg
import pytest

from consumers.fanout.delivery_store import FanoutStore, list_halts, list_parked
from consumers.fanout.operations import redrive
from consumers.fanout.worker import EXIT_HALTED
from ledger_kernel.observability import Metrics
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


def _stories(n: int) -> list[OrderStory]:
    stories = []
    for _ in range(n):
        story = OrderStory()
        story.place()
        story.pay("20.00")
        story.ship("S1", "L1", "L2")
        stories.append(story)
    return stories


def _t(entry: dict[str, object]) -> float:
    return datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00")).timestamp()


async def test_429_storm_waits_for_the_reset_and_loses_nothing(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    stories = _stories(4)
    reset = 2
    async with sandbox("omnisend") as omnisend:
        await omnisend.fault({"rate_limit_storm": {"count": 2, "reset_seconds": reset}})
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=omnisend)
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, topic, [e for s in stories for e in s.envelopes])
            await wait_for(lambda: _all(pool, "omnisend", 12), timeout=30, what="12 events delivered")
        assert await inbox_count(pool, "omnisend") == 12, "each event recorded once"
        log = await omnisend.requests()
        storms = [e for e in log if e["status"] == 429]
        assert storms, "the storm happened"
        creates = [
            e for e in log if e["method"] == "POST" and e["path"] == "/v3/orders" and e["status"] < 300
        ]
        assert len(creates) == len(stories), "each order created once, the storm's retries included"
        for hit in storms:
            t = _t(hit)
            # Calls already in flight when the 429 arrived may land within a few ms; none may be
            # sent after we saw it until the window reset.
            early = [e for e in log if t + 0.2 < _t(e) < t + reset - 0.05]
            assert early == [], f"requests before the reset window ended: {early}"
        state = (await omnisend.state())["orders"]
        assert set(state) == {s.order_id for s in stories}
        assert all(
            o["fulfillmentStatus"] == "fulfilled" and o["paymentStatus"] == "paid" for o in state.values()
        )


async def _all(pool: asyncpg.Pool, destination: str, n: int) -> bool:
    return await inbox_count(pool, destination) >= n


async def test_503_outage_then_recovery_no_loss_no_duplicate(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    stories = _stories(3)
    async with sandbox("omneo") as omneo:
        await omneo.fault({"status": 503, "count": 10})  # counted: group join time varies
        settings = make_settings(database_url, kafka_bootstrap, topic, omneo=omneo, max_attempts=30)
        metrics = Metrics()
        async with worker("omneo", settings, pool, metrics):
            await publish(kafka_bootstrap, topic, [e for s in stories for e in s.envelopes])
            await wait_for(lambda: _all(pool, "omneo", 9), timeout=40, what="9 events delivered")
        log = await omneo.requests()
        assert sum(1 for e in log if e["status"] == 503) == 10
        state = await omneo.state()
        assert sorted(o["external_id"] for o in state["orders"].values()) == sorted(
            s.order_id for s in stories
        )
        creates = [
            e for e in log if e["method"] == "POST" and e["path"] == "/api/v3/orders" and e["status"] < 300
        ]
        assert len(creates) == 3, "one create per order"
        txs = list(state["transactions"].values())
        assert sorted(t["external_id"] for t in txs) == sorted(f"{s.order_id}:S1" for s in stories)
        assert metrics.outbound_calls.labels("omneo", "503")._value.get() > 0
        assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0


async def test_401_halts_the_destination_without_committing(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    story.place()
    async with sandbox("omnisend") as omnisend:
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=omnisend)
        settings.omnisend.token = type(settings.omnisend.token)("wrong-key")  # type: ignore[misc]
        await publish(kafka_bootstrap, topic, story.envelopes)
        async with worker("omnisend", settings, pool) as task:
            code = await asyncio.wait_for(task, 30)
        assert code == EXIT_HALTED
        assert len(await omnisend.requests()) == 1, "no retry storm"
        halts = await list_halts(pool)
        assert [h["destination"] for h in halts] == ["omnisend"]
        assert await inbox_count(pool, "omnisend") == 0
        # After the credential fix and the operator's `ledger fanout resume`, a restarted worker
        # gets the same event again (nothing was committed).
        settings.omnisend.token = type(settings.omnisend.token)(omnisend.token)
        await FanoutStore(pool, "omnisend").clear_halt()
        async with worker("omnisend", settings, pool):
            await wait_for(lambda: _all(pool, "omnisend", 1), what="redelivered after the fix")
        assert await list_halts(pool) == []


async def test_422_parks_only_that_order_and_redrive_delivers_in_order(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    bad, good = OrderStory(), OrderStory()
    bad.place()
    good.place()
    async with sandbox("omnisend") as omnisend:
        await omnisend.fault({"reject_order": bad.order_id, "status": 422})
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=omnisend)
        metrics = Metrics()
        async with worker("omnisend", settings, pool, metrics):
            await publish(kafka_bootstrap, topic, bad.envelopes + good.envelopes)
            await wait_for(lambda: _all(pool, "omnisend", 1), what="good order placed")
            later = (
                bad.pay("20.00")
                + good.pay("20.00")
                + bad.ship("S1", "L1", "L2")
                + good.ship("S1", "L1", "L2")
            )
            await publish(kafka_bootstrap, topic, later)
            await wait_for(lambda: _all(pool, "omnisend", 3), what="good order flows")

            async def bad_queued() -> bool:
                return cast(int, await pool.fetchval("SELECT count(*) FROM fanout_parked")) == 3

            await wait_for(bad_queued, what="bad order's 3 events parked")
            assert metrics.parked_orders.labels("omnisend")._value.get() == 1
        state = (await omnisend.state())["orders"]
        assert list(state) == [good.order_id]
        assert state[good.order_id]["fulfillmentStatus"] == "fulfilled"
        parked = await list_parked(pool)
        assert len(parked) == 1
        assert parked[0]["order_id"] == bad.order_id
        assert parked[0]["waiting"] == 3
        assert "422" in parked[0]["reason"]
        assert parked[0]["detail"] is not None
        queue = await pool.fetch("SELECT version, reason FROM fanout_parked ORDER BY version")
        assert [r["version"] for r in queue] == [1, 2, 3]
        assert all(r["reason"].startswith("waiting behind") for r in queue[1:])

        # Still broken: redrive leaves it parked, with the reason.
        again = await redrive(settings, pool, destination="omnisend")
        assert [(r.delivered, r.stopped is not None) for r in again] == [(0, True)]

        await omnisend.clear_faults()  # "the fix"
        mark = len(await omnisend.requests())
        results = await redrive(settings, pool, destination="omnisend", order_id=bad.order_id)
        assert [(r.order_id, r.delivered, r.stopped) for r in results] == [(bad.order_id, 3, None)]
        sent = [
            e
            for e in (await omnisend.requests())[mark:]
            if bad.order_id in e["path"] or e["method"] == "POST"
        ]
        assert [e["method"] for e in sent] == ["POST", "PATCH", "PATCH"], "parked events in order"
        assert [e["body"].get("paymentStatus") for e in sent] == ["awaitingPayment", "paid", "paid"]
        assert sent[-1]["body"]["fulfillmentStatus"] == "fulfilled"
        assert await list_parked(pool) == []
        assert await inbox_count(pool, "omnisend") == 6

"""SIGTERM while a batch waits out a vendor's rate-limit window: prompt exit, nothing lost."""

from __future__ import annotations

import time

import asyncpg
import pytest

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


async def test_stop_during_429_window_exits_promptly_and_restart_sends_the_event(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    story.place()
    async with sandbox("omnisend") as box:
        await box.fault({"rate_limit_storm": True, "reset_seconds": 120, "paths": "/api/events"})
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=box, mode="events")
        await publish(kafka_bootstrap, topic, story.envelopes)
        async with worker("omnisend", settings, pool):

            async def refused() -> bool:
                return len(await box.requests()) >= 1

            await wait_for(refused, what="the first 429")
            stopping = time.monotonic()
        assert time.monotonic() - stopping < 10, "the 120 s window does not hold the shutdown"
        sent = await pool.fetchval("SELECT sent FROM fanout_delivery")
        assert not any(k.startswith("inflight:") for k in dict(sent or {})), "refused: no marker"

        # The shared budget remembers the vendor's window for every process, a restarted one too.
        closed_for = await pool.fetchval(
            "SELECT extract(epoch FROM open_at - clock_timestamp())::float8 FROM fanout_rate_budget"
            " WHERE destination = 'omnisend'"
        )
        assert closed_for > 60, "the 429's reset window is in the shared gate"

        await box.clear_faults()  # the vendor's window is over early: open the shared gate too
        await pool.execute("UPDATE fanout_rate_budget SET open_at = clock_timestamp()")
        async with worker("omnisend", settings, pool):

            async def delivered() -> bool:
                return await inbox_count(pool, "omnisend") >= 1

            await wait_for(delivered, what="the event after restart")
        accepted = [r for r in await box.requests() if r["status"] == 202]
        assert [r["body"]["eventName"] for r in accepted] == ["placed order"]

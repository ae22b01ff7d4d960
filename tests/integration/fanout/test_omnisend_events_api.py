"""Events mode speaks Omnisend's 2026-03-15 API, through the real worker."""

from __future__ import annotations

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


async def test_events_go_to_api_events_with_the_2026_key_and_version_headers(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    envelopes = [*story.place(), *story.pay("20.00")]
    await new_topic(kafka_bootstrap, unique_topic)
    async with sandbox("omnisend") as box:
        settings = make_settings(database_url, kafka_bootstrap, unique_topic, omnisend=box, mode="events")
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, unique_topic, envelopes)

            async def delivered() -> bool:
                return await inbox_count(pool, "omnisend") >= len(envelopes)

            await wait_for(delivered, what="both events delivered")
        log = await box.requests()
        assert [(r["method"], r["path"], r["status"]) for r in log] == [
            ("POST", "/api/events", 202),
            ("POST", "/api/events", 202),
        ]
        assert all(r["headers"]["omnisend-version"] == "2026-03-15" for r in log)
        assert all("authorization" in r["headers"] and "x-api-key" not in r["headers"] for r in log)
        names = [e["eventName"] for e in (await box.state())["events"]]
        assert names == ["placed order", "paid for order"]

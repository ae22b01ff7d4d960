"""Omnisend `orderNumber` through the real worker: the seed's string or the spec's integer.

The seed types `orderNumber` as a string, Omnisend's published v3 spec as an integer
(docs/connectors.md); `settings.omnisend.order_number_type` chooses, and the sandbox set to
the same type takes the order while one set to the other refuses it.
"""

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


async def _settled(pool: asyncpg.Pool, n: int) -> bool:
    parked = await pool.fetchval("SELECT count(*) FROM fanout_parked WHERE destination = 'omnisend'")
    return await inbox_count(pool, "omnisend") + int(parked) >= n


@pytest.mark.parametrize(
    "case", [("string", "#1001-B"), ("integer", 1001)], ids=["seed-string", "spec-integer"]
)
async def test_order_number_is_sent_as_the_configured_type_and_the_matching_sandbox_takes_it(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str, case: tuple[str, object]
) -> None:
    setting, sent = case
    story = OrderStory()
    envelopes = story.place(external_id="#1001-B")
    async with sandbox("omnisend", order_number_type=setting) as box:
        await new_topic(kafka_bootstrap, unique_topic)
        settings = make_settings(
            database_url, kafka_bootstrap, unique_topic, omnisend=box, order_number_type=setting
        )
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, unique_topic, envelopes)
            await wait_for(lambda: _settled(pool, len(envelopes)), what="the order delivered or parked")
        assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0
        assert (await box.state())["orders"][story.order_id]["orderNumber"] == sent


async def test_a_sandbox_typed_the_other_way_refuses_the_order_number_and_the_order_parks(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    envelopes = story.place(external_id="#1001-B")
    async with sandbox("omnisend", order_number_type="integer") as box:
        await new_topic(kafka_bootstrap, unique_topic)
        settings = make_settings(database_url, kafka_bootstrap, unique_topic, omnisend=box)
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, unique_topic, envelopes)
            await wait_for(lambda: _settled(pool, len(envelopes)), what="the order delivered or parked")
        reason = await pool.fetchval("SELECT reason FROM fanout_parked WHERE destination = 'omnisend'")
        assert "HTTP 400" in reason
        assert story.order_id not in (await box.state())["orders"]

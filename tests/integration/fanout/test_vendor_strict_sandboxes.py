"""Through the real worker, against sandboxes as strict as the vendors' published documents.

Omnisend's spec documents 404 for a PUT to an order it does not have, so the worker's
404-then-POST path is exercised; Omneo's SDK types `location_id` as a required string on a
Transaction, so online orders (no ship-from store) need the default location setting.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.fanout.support import (
    Sandbox,
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


async def _settled(pool: asyncpg.Pool, destination: str, count: int) -> None:
    async def done() -> bool:
        parked = await pool.fetchval("SELECT count(*) FROM fanout_parked WHERE destination = $1", destination)
        return await inbox_count(pool, destination) + int(parked) >= count

    await wait_for(done, what=f"{count} {destination} events delivered or parked")


async def _parked(pool: asyncpg.Pool, destination: str) -> list[Any]:
    rows = await pool.fetch("SELECT reason FROM fanout_parked WHERE destination = $1", destination)
    return [r["reason"] for r in rows]


async def _forget_everything(box: Sandbox) -> None:
    async with httpx.AsyncClient(base_url=box.url) as control:
        (await control.post("/_sandbox/reset")).raise_for_status()


async def test_an_order_omnisend_lost_is_created_again_after_the_put_answers_404(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    placed = story.place()
    await new_topic(kafka_bootstrap, unique_topic)
    async with sandbox("omnisend") as box:
        settings = make_settings(database_url, kafka_bootstrap, unique_topic, omnisend=box)
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, unique_topic, placed)
            await _settled(pool, "omnisend", 1)
            await _forget_everything(box)  # deleted in Omnisend's UI, say
            await publish(kafka_bootstrap, unique_topic, story.update(note="leave at the door"))
            await _settled(pool, "omnisend", 2)
        assert await _parked(pool, "omnisend") == []
        assert [(r["method"], r["status"]) for r in await box.requests()] == [("PUT", 404), ("POST", 200)]
        assert (await box.state())["orders"][story.order_id]["contactNote"] == "leave at the door"


async def _ship_online_order(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, topic: str, box: Sandbox, **dest: Any
) -> None:
    story = OrderStory()
    envelopes = [*story.place(), *story.pay("20.00"), *story.ship("S1", "L1", "L2", location=None)]
    await new_topic(kafka_bootstrap, topic)
    settings = make_settings(database_url, kafka_bootstrap, topic, omneo=box, **dest)
    async with worker("omneo", settings, pool):
        await publish(kafka_bootstrap, topic, envelopes)
        await _settled(pool, "omneo", len(envelopes))


async def test_an_online_order_s_transaction_carries_the_default_location(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    async with sandbox("omneo") as box:
        await _ship_online_order(
            pool, database_url, kafka_bootstrap, unique_topic, box, default_location_id="web-store"
        )
        assert await _parked(pool, "omneo") == []
        (tx,) = (await box.state())["transactions"].values()
        assert tx["location_id"] == "web-store"


async def test_without_a_default_location_omneo_refuses_an_online_transaction_and_it_parks(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    async with sandbox("omneo") as box:
        await _ship_online_order(pool, database_url, kafka_bootstrap, unique_topic, box)
        (reason,) = {r for r in await _parked(pool, "omneo") if "rejected" in r}
        assert "HTTP 422" in reason
        assert (await box.state())["transactions"] == {}


async def test_an_anonymous_shopper_s_transaction_reaches_omneo_under_their_email(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    envelopes = [*story.place(profile_id=None), *story.pay("20.00"), *story.ship("S1", "L1", "L2")]
    await new_topic(kafka_bootstrap, unique_topic)
    async with sandbox("omneo") as box:
        settings = make_settings(database_url, kafka_bootstrap, unique_topic, omneo=box)
        async with worker("omneo", settings, pool):
            await publish(kafka_bootstrap, unique_topic, envelopes)
            await _settled(pool, "omneo", len(envelopes))
        assert await _parked(pool, "omneo") == []
        (tx,) = (await box.state())["transactions"].values()
        assert (tx["profile_id"], tx["profile_id_handle"]) == ("ann@example.com", "email")

"""Omnisend through the real worker: countryCode format, the POST-then-PUT fallback, E.164 phones.

Each test runs the worker against the Omnisend sandbox over Kafka and PostgreSQL, and proves
an order that today's mapping would park (or send unusable) now arrives whole.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from ledger_kernel.observability import Metrics
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


async def _parked(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM fanout_parked WHERE destination = 'omnisend'"))


async def _deliver(
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    topic: str,
    *,
    box: Sandbox,
    envelopes: list[dict[str, object]],
    metrics: Metrics | None = None,
    **dest: Any,
) -> None:
    """Publish the envelopes and run the Omnisend worker until each has a recorded outcome."""
    await new_topic(kafka_bootstrap, topic)
    settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=box, **dest)
    async with worker("omnisend", settings, pool, metrics):
        await publish(kafka_bootstrap, topic, envelopes)

        async def settled() -> bool:
            return await inbox_count(pool, "omnisend") + await _parked(pool) >= len(envelopes)

        await wait_for(settled, what="every event delivered or parked")


async def test_alpha2_setting_reaches_the_mapper_and_the_alpha2_sandbox_takes_the_order(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    envelopes = story.place(shipping_address={"country_code": "DEU", "city": "Berlin"})
    async with sandbox("omnisend", country_code_format="alpha2") as box:
        await _deliver(
            pool,
            database_url,
            kafka_bootstrap,
            unique_topic,
            box=box,
            envelopes=envelopes,
            country_code_format="alpha2",
        )
        assert await _parked(pool) == 0
        assert [r["status"] for r in await box.requests()] == [200]
        stored = (await box.state())["orders"][story.order_id]
        assert stored["shippingAddress"]["countryCode"] == "DE"


@pytest.mark.parametrize("status", [400, 404, 409, 422])
async def test_a_refused_post_for_an_order_omnisend_already_has_becomes_a_put(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str, status: int
) -> None:
    story = OrderStory()
    envelopes = story.place()
    # Omnisend does not document its duplicate answer; this one has neither 409 nor "already exists".
    async with sandbox("omnisend", duplicate_status=status, duplicate_message="Bad Request") as box:
        async with httpx.AsyncClient(base_url=box.url, headers={"X-API-KEY": box.token}) as http:
            earlier = {
                "orderID": story.order_id,
                "email": "ann@example.com",
                "currency": "USD",
                "orderSum": 1,
                "createdAt": "2026-03-01T12:00:00Z",
            }
            assert (await http.post("/v3/orders", json=earlier)).status_code == 200
        await _deliver(pool, database_url, kafka_bootstrap, unique_topic, box=box, envelopes=envelopes)
        assert await _parked(pool) == 0
        calls = [(r["method"], r["status"]) for r in await box.requests()][1:]
        assert calls == [("POST", status), ("PUT", 200)]
        assert (await box.state())["orders"][story.order_id]["orderSum"] == 2000


async def test_a_post_refused_for_its_content_parks_with_the_post_s_reason(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    envelopes = story.place()
    async with sandbox("omnisend") as box:
        await box.fault({"reject_order": story.order_id, "status": 422, "methods": ["POST"]})
        await _deliver(pool, database_url, kafka_bootstrap, unique_topic, box=box, envelopes=envelopes)
        reason = await pool.fetchval("SELECT reason FROM fanout_parked WHERE destination = 'omnisend'")
        assert "HTTP 422" in reason
        assert [(r["method"], r["status"]) for r in await box.requests()] == [("POST", 422), ("PUT", 404)]


async def test_phones_reach_omnisend_as_e164_and_an_unusable_one_is_left_out_and_counted(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    envelopes = story.place(
        phone="0412 345 678",
        billing_address={"country_code": "AU", "phone": "ask at desk", "city": "Melbourne"},
        shipping_address={"country_code": "AU", "city": "Melbourne"},
    )
    metrics = Metrics()
    async with sandbox("omnisend") as box:
        await _deliver(
            pool, database_url, kafka_bootstrap, unique_topic, box=box, envelopes=envelopes, metrics=metrics
        )
        assert await _parked(pool) == 0
        stored = (await box.state())["orders"][story.order_id]
        assert stored["phone"] == "+61412345678"
        assert "phone" not in stored["billingAddress"]
    sample = metrics.registry.get_sample_value(
        "ledger_fanout_dropped_fields_total", {"destination": "omnisend", "field": "billingAddress.phone"}
    )
    assert sample == 1.0


async def test_events_mode_takes_a_long_name_and_a_long_phone_without_parking(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    story = OrderStory()
    name = "Maximiliana Alexandrina Konstantinopoulou-Vanderbilt"  # 52 characters
    envelopes = story.place(first_name=name, phone="+49 30 123456789012")
    async with sandbox("omnisend") as box:
        await _deliver(
            pool, database_url, kafka_bootstrap, unique_topic, box=box, envelopes=envelopes, mode="events"
        )
        assert await _parked(pool) == 0
        (event,) = (await box.state())["events"]
        assert event["eventName"] == "placed order"
        assert name.startswith(event["contact"]["firstName"])
        assert "phone" not in event["contact"]

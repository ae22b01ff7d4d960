"""Omnisend categories, tax-inclusive prices and discountValue, through the real worker."""

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
from tests.unit.mapping.test_omnisend_catalogue import tax_exclusive_story

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]


async def test_categories_are_created_once_with_parents_and_products_carry_taxed_prices(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    first, one = tax_exclusive_story(["Clothing > Coats", "Sale"])
    second, two = tax_exclusive_story(["Clothing > Coats"])
    await new_topic(kafka_bootstrap, unique_topic)
    async with sandbox("omnisend", seed_rules=True) as box:
        settings = make_settings(database_url, kafka_bootstrap, unique_topic, omnisend=box)
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, unique_topic, one)

            async def delivered(n: int) -> bool:
                return await inbox_count(pool, "omnisend") >= n

            await wait_for(lambda: delivered(1), what="first order delivered")
        # A new worker process: what it knows about categories comes from PostgreSQL.
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, unique_topic, two)
            await wait_for(lambda: delivered(2), what="second order delivered")
        parked = await pool.fetchval("SELECT count(*) FROM fanout_parked WHERE destination = 'omnisend'")
        assert parked == 0
        log = await box.requests()
        assert [r["status"] for r in log if r["status"] >= 400] == []
        created = [r["body"]["categoryID"] for r in log if r["path"] == "/v3/categories"]
        assert created == ["Clothing", "Clothing > Coats", "Sale"]
        state = await box.state()
        assert set(state["categories"]) == {"Clothing", "Clothing > Coats", "Sale"}
        order = state["orders"][second.order_id]
        assert order["products"][0]["categoryIDs"] == ["Clothing", "Clothing > Coats"]
        assert order["products"][0]["price"] == 1100
        assert order["discountValue"] == 100
        assert state["orders"][first.order_id]["products"][0]["categoryIDs"][-1] == "Sale"

"""Replay re-sends from the Postgres log regardless of the inbox (after a mapping bug fix)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from consumers.fanout.delivery_store import FanoutStore
from consumers.fanout.operations import replay
from ledger.store import EventStore
from ledger.store.records import NewEvent
from tests.integration.fanout.support import make_settings, sandbox
from tests.unit.mapping.story import OrderStory

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _append(
    store: EventStore, story: OrderStory, envelopes: list[dict[str, Any]] | None = None
) -> None:
    envelopes = story.envelopes if envelopes is None else envelopes
    events = [NewEvent(type=e["type"], data=e["data"], event_id=uuid.UUID(e["event_id"])) for e in envelopes]
    await store.append(f"order-{story.order_id}", events, envelopes[0]["version"] - 1)


async def test_replay_resends_latest_state_without_duplicates(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    story = OrderStory()
    story.place()
    story.pay("20.00")
    story.ship("S1", "L1", "L2")
    await _append(store, story)
    async with sandbox("omneo") as omneo:
        settings = make_settings(database_url, "127.0.0.1:9", "unused", omneo=omneo)
        first = await replay(settings, pool, destination="omneo", order_id=story.order_id)
        assert first == {"orders": 1, "calls": 2, "skipped_parked": 0}, "create + one transaction"
        mark = len(await omneo.requests())
        position = await pool.fetchval("SELECT min(position) FROM events")
        second = await replay(settings, pool, destination="omneo", from_position=position)
        assert second["orders"] == 1
        resent = (await omneo.requests())[mark:]
        assert [(r["method"], r["path"]) for r in resent] == [
            ("PUT", f"/api/v3/orders/{(await omneo.state())['orders'].popitem()[1]['id']}"),
            ("POST", "/api/v3/transactions/update-create"),
        ]
        assert all(r["status"] < 300 for r in resent)
        state = await omneo.state()
        assert len(state["orders"]) == 1
        assert len(state["transactions"]) == 1, "update-create by external_id: no duplicate"
        inbox = await pool.fetch("SELECT outcome FROM fanout_inbox WHERE destination = 'omneo'")
        assert {r["outcome"] for r in inbox} == {"replayed"}


async def test_replay_reads_the_log_under_the_order_lock(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    story = OrderStory()
    await _append(store, story, story.place() + story.pay("20.00"))
    paths: list[str] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(201, json={"data": {"id": 5}})

    settings = make_settings(database_url, "127.0.0.1:9", "unused")
    transport = httpx.MockTransport(vendor)
    # The worker holds the lock, delivering an event that was appended after replay started.
    async with FanoutStore(pool, "omneo").order_lock(story.order_id):
        task = asyncio.create_task(
            replay(settings, pool, destination="omneo", order_id=story.order_id, transport=transport)
        )
        await asyncio.sleep(0.5)
        await _append(store, story, story.ship("S1", "L1", "L2"))
    assert (await asyncio.wait_for(task, 10))["orders"] == 1
    assert await pool.fetchval("SELECT last_version FROM fanout_delivery") == 3, "the latest state"
    assert "/api/v3/transactions/update-create" in paths

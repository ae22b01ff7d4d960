"""Backlogs and replays reach Omnisend in v3 batches, each order's item outcome its own.

Real PostgreSQL, the real worker over a real broker (backlog) or `ledger fanout replay`'s
operation (replay), against the Omnisend sandbox, which runs batches asynchronously as the
vendor documents (`pending`/`inProgress` until polled enough, then `finished`, per-item
`responseCode` and `response`).
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from consumers.fanout.operations import redrive, replay
from ledger.store import EventStore
from ledger.store.records import NewEvent
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

BATCHING: dict[str, Any] = {"batch_size": 5, "batch_min_orders": 2, "batch_poll_s": 0.01}


async def _append(store: EventStore, story: OrderStory) -> None:
    events = [
        NewEvent(type=e["type"], data=e["data"], event_id=uuid.UUID(e["event_id"])) for e in story.envelopes
    ]
    await store.append(f"order-{story.order_id}", events, 0)


def _stories(n: int) -> list[OrderStory]:
    out = []
    for i in range(n):
        story = OrderStory()
        story.place(external_id=f"{1001 + i}")
        story.pay("20.00")
        out.append(story)
    return out


async def _calls(box: Sandbox) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in await box.requests()]


async def test_a_replay_of_many_orders_goes_in_batches_of_the_configured_size(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    stories = _stories(12)
    for story in stories:
        await _append(store, story)
    async with sandbox("omnisend") as box:
        settings = make_settings(database_url, "127.0.0.1:9", "unused", omnisend=box, **BATCHING)
        position = await pool.fetchval("SELECT min(position) FROM events")
        summary = await replay(settings, pool, destination="omnisend", from_position=position)
        calls = await _calls(box)
        state = await box.state()
    assert summary == {"orders": 12, "calls": len(calls), "skipped_parked": 0}
    # 5 + 5 + 2 orders: each batch is one POST, one poll answering inProgress, one finished, its items.
    assert [c for c in calls if c[1] == "/v3/batches"] == [("POST", "/v3/batches")] * 3
    assert len(calls) == 12, "4 calls per batch of up to 5 orders instead of 12 order POSTs"
    assert not [c for c in calls if c[1].startswith("/v3/orders")], "no order went alone"
    assert sorted(state["orders"]) == sorted(s.order_id for s in stories)
    assert {b["status"] for b in state["batches"].values()} == {"finished"}
    assert all(o["paymentStatus"] == "paid" for o in state["orders"].values())
    outcomes = await pool.fetch("SELECT DISTINCT outcome FROM fanout_inbox WHERE destination = 'omnisend'")
    assert {r["outcome"] for r in outcomes} == {"replayed"}
    again = await pool.fetchval("SELECT count(*) FROM fanout_delivery WHERE remote_exists")
    assert again == 12


async def test_a_second_replay_replaces_in_put_batches(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    stories = _stories(6)
    for story in stories:
        await _append(store, story)
    async with sandbox("omnisend") as box:
        settings = make_settings(database_url, "127.0.0.1:9", "unused", omnisend=box, **BATCHING)
        position = await pool.fetchval("SELECT min(position) FROM events")
        await replay(settings, pool, destination="omnisend", from_position=position)
        mark = len(await box.requests())
        await replay(settings, pool, destination="omnisend", from_position=position)
        second = (await box.requests())[mark:]
    batches = [r["body"] for r in second if (r["method"], r["path"]) == ("POST", "/v3/batches")]
    assert [(b["method"], b["endpoint"], len(b["items"])) for b in batches] == [("PUT", "orders", 5)]
    alone = [(r["method"], r["path"]) for r in second if r["path"].startswith("/v3/orders")]
    assert alone == [("PUT", f"/v3/orders/{stories[-1].order_id}")], "a batch of one is a single call"
    assert all(r["status"] < 300 for r in second)


async def test_a_backlog_reaches_omnisend_in_batches_through_the_worker(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    stories = _stories(40)
    envelopes = [e for s in stories for e in s.envelopes]
    await new_topic(kafka_bootstrap, unique_topic)
    await publish(kafka_bootstrap, unique_topic, envelopes)  # the backlog is there before the worker
    async with sandbox("omnisend") as box:
        settings = make_settings(
            database_url, kafka_bootstrap, unique_topic, omnisend=box, **{**BATCHING, "batch_size": 500}
        )
        async with worker("omnisend", settings, pool):

            async def drained() -> bool:
                return await inbox_count(pool, "omnisend") >= len(envelopes)

            await wait_for(drained, what="every event of the backlog handled")
        calls = await _calls(box)
        state = await box.state()
    assert sorted(state["orders"]) == sorted(s.order_id for s in stories)
    assert ("POST", "/v3/batches") in calls
    assert len(calls) <= len(stories) // 2, f"{len(calls)} calls for {len(stories)} orders"
    assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0


async def test_an_item_refused_in_a_batch_parks_only_its_own_order(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    stories = _stories(10)
    refused = stories[3].order_id
    envelopes = [e for s in stories for e in s.envelopes]
    await new_topic(kafka_bootstrap, unique_topic)
    await publish(kafka_bootstrap, unique_topic, envelopes)
    async with sandbox("omnisend") as box:
        await box.fault({"reject_order": refused, "status": 422, "methods": ["POST"]})
        settings = make_settings(
            database_url, kafka_bootstrap, unique_topic, omnisend=box, **{**BATCHING, "batch_size": 500}
        )
        async with worker("omnisend", settings, pool):

            async def settled() -> bool:
                parked = await pool.fetchval("SELECT count(*) FROM fanout_parked")
                return await inbox_count(pool, "omnisend") + int(parked) >= len(envelopes)

            await wait_for(settled, what="every event delivered or parked")
        calls = await _calls(box)
        state = await box.state()
    parked = await pool.fetch(
        "SELECT DISTINCT order_id, reason FROM fanout_parked WHERE reason LIKE '%HTTP%'"
    )
    assert [(r["order_id"]) for r in parked] == [refused]
    assert "HTTP 422" in parked[0]["reason"]
    assert sorted(state["orders"]) == sorted(s.order_id for s in stories if s.order_id != refused)
    alone = [c for c in calls if c[1].startswith("/v3/orders")]
    assert ("PUT", f"/v3/orders/{refused}") in alone, "the refused POST item falls back to a PUT, alone"
    assert {path for _, path in alone} <= {"/v3/orders", f"/v3/orders/{refused}"}


async def test_a_throttled_item_is_sent_again_alone_and_an_order_omnisend_lost_is_created_again(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    stories = _stories(4)
    for story in stories:
        await _append(store, story)
    throttled, lost = stories[1].order_id, stories[2].order_id
    async with sandbox("omnisend") as box:
        settings = make_settings(database_url, "127.0.0.1:9", "unused", omnisend=box, **BATCHING)
        position = await pool.fetchval("SELECT min(position) FROM events")
        await replay(settings, pool, destination="omnisend", from_position=position)
        async with httpx.AsyncClient(base_url=box.url, headers={"X-API-KEY": box.token}) as http:
            assert (await http.delete(f"/v3/orders/{lost}")).status_code == 204  # deleted in Omnisend's UI
        # One 503 for that order's PUT: its batch item (the vendor's plugin re-queues those).
        await box.fault({"reject_order": throttled, "status": 503, "methods": ["PUT"], "count": 1})
        mark = len(await box.requests())
        summary = await replay(settings, pool, destination="omnisend", from_position=position)
        second = [(r["method"], r["path"], r["status"]) for r in (await box.requests())[mark:]]
        state = await box.state()
    assert summary["orders"] == 4
    alone = [c for c in second if c[1].startswith("/v3/orders")]
    assert alone == [("PUT", f"/v3/orders/{throttled}", 200), ("POST", "/v3/orders", 200)]
    assert sorted(state["orders"]) == sorted(s.order_id for s in stories)
    assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0


async def test_categories_are_created_once_before_the_batch_that_names_them(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    stories = []
    for i in range(3):
        story = OrderStory()
        story.place(external_id=f"{2001 + i}", categories=("Clothing > Coats",))
        stories.append(story)
        await _append(store, story)
    async with sandbox("omnisend") as box:
        settings = make_settings(database_url, "127.0.0.1:9", "unused", omnisend=box, **BATCHING)
        position = await pool.fetchval("SELECT min(position) FROM events")
        await replay(settings, pool, destination="omnisend", from_position=position)
        calls = await _calls(box)
        state = await box.state()
    assert calls[:3] == [("POST", "/v3/categories"), ("POST", "/v3/categories"), ("POST", "/v3/batches")]
    assert sorted(state["categories"]) == ["Clothing", "Clothing > Coats"]
    assert all(
        o["products"][0]["categoryIDs"] == ["Clothing", "Clothing > Coats"] for o in state["orders"].values()
    )
    assert len(state["orders"]) == 3


async def _run_late(box: Sandbox, batch_id: str) -> None:
    """Omnisend runs a batch whenever it likes: here, on the test's own status reads."""
    async with httpx.AsyncClient(base_url=box.url, headers={"X-API-KEY": box.token}) as http:
        for _ in range(3):
            assert (await http.get(f"/v3/batches/{batch_id}")).status_code == 200


async def _put_batch_given_up_on(
    pool: asyncpg.Pool, store: EventStore, box: Sandbox, database_url: str
) -> tuple[OrderStory, str]:
    """Three orders replayed twice, the second time in a PUT batch given up on at once (its
    orders went alone); then one order is cancelled. The order and the batch, still queued."""
    stories = _stories(3)
    for story in stories:
        await _append(store, story)
    position = await pool.fetchval("SELECT min(position) FROM events")
    settings = make_settings(database_url, "127.0.0.1:9", "unused", omnisend=box, **BATCHING)
    await replay(settings, pool, destination="omnisend", from_position=position)
    hasty = make_settings(
        database_url, "127.0.0.1:9", "unused", omnisend=box, **{**BATCHING, "batch_wait_s": 0}
    )
    await replay(hasty, pool, destination="omnisend", from_position=position)
    pending = [k for k, b in (await box.state())["batches"].items() if b["status"] == "pending"]
    assert len(pending) == 1, "the PUT batch is still queued at Omnisend"
    later = stories[0]
    new = later.cancel()
    await store.append(
        f"order-{later.order_id}",
        [NewEvent(type=e["type"], data=e["data"], event_id=uuid.UUID(e["event_id"])) for e in new],
        len(later.envelopes) - len(new),
    )
    return later, pending[0]


def _cancelled(state: dict[str, Any], order_id: str) -> bool:
    order = state["orders"][order_id]
    return bool(order.get("canceledDate")) and order.get("cancelReason") == "customer asked"


async def test_a_batch_given_up_on_never_overwrites_a_newer_state_sent_alone_later(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    async with sandbox("omnisend") as box:
        later, batch_id = await _put_batch_given_up_on(pool, store, box, database_url)
        settings = make_settings(database_url, "127.0.0.1:9", "unused", omnisend=box, **BATCHING)
        # The newer state goes alone (one order: no batch) while the older batch is queued.
        await replay(settings, pool, destination="omnisend", order_id=later.order_id)
        await _run_late(box, batch_id)
        state = await box.state()
    assert state["batches"][batch_id]["status"] == "finished"
    assert _cancelled(state, later.order_id), "the cancellation is still there once the old batch ran"
    assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0


async def test_an_order_parks_while_a_batch_with_its_older_state_runs_and_a_redrive_sends_it_after(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    async with sandbox("omnisend") as box:
        later, batch_id = await _put_batch_given_up_on(pool, store, box, database_url)
        hasty = make_settings(
            database_url, "127.0.0.1:9", "unused", omnisend=box, **{**BATCHING, "batch_wait_s": 0}
        )
        await replay(hasty, pool, destination="omnisend", order_id=later.order_id)
        parked = await pool.fetch("SELECT order_id, reason FROM fanout_parked")
        assert not _cancelled(await box.state(), later.order_id), "nothing sent while the batch may run"
        await _run_late(box, batch_id)
        results = await redrive(hasty, pool, destination="omnisend")
        state = await box.state()
    assert [r["order_id"] for r in parked] == [later.order_id]
    assert f"Omnisend batch {batch_id}" in parked[0]["reason"]
    assert [(r.order_id, r.stopped) for r in results] == [(later.order_id, None)]
    assert _cancelled(state, later.order_id)
    marks = await pool.fetchval("SELECT count(*) FROM fanout_delivery WHERE sent::text LIKE '%batch:%'")
    assert marks == 2, "only the two orders not delivered since keep the mark of the ended batch"


async def test_the_worker_holds_back_a_newer_state_until_a_put_batch_it_gave_up_on_has_run(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    stories = _stories(10)
    await new_topic(kafka_bootstrap, unique_topic)
    await publish(kafka_bootstrap, unique_topic, [e for s in stories for e in s.envelopes])
    async with sandbox("omnisend") as box:
        patient = make_settings(
            database_url, kafka_bootstrap, unique_topic, omnisend=box, **{**BATCHING, "batch_size": 500}
        )
        async with worker("omnisend", patient, pool):

            async def created() -> bool:
                return len((await box.state())["orders"]) == len(stories)

            await wait_for(created, what="every order created")
        # A backlog of replacements the next worker sends in a PUT batch it gives up on at once.
        await publish(
            kafka_bootstrap, unique_topic, [e for s in stories for e in s.update(email="new@example.com")]
        )
        hasty = make_settings(
            database_url,
            kafka_bootstrap,
            unique_topic,
            omnisend=box,
            **{**BATCHING, "batch_size": 500, "batch_wait_s": 0},
        )
        later = stories[0]
        async with worker("omnisend", hasty, pool):

            async def replaced() -> bool:
                return await inbox_count(pool, "omnisend") >= sum(len(s.envelopes) for s in stories)

            await wait_for(replaced, what="every replacement handled")
            pending = [k for k, b in (await box.state())["batches"].items() if b["status"] == "pending"]
            assert len(pending) == 1, "a PUT batch given up on is still queued at Omnisend"
            await publish(kafka_bootstrap, unique_topic, later.cancel())

            async def parked() -> bool:
                return bool(await pool.fetchval("SELECT count(*) FROM fanout_parked"))

            await wait_for(parked, what="the cancellation held back")
        assert not _cancelled(await box.state(), later.order_id)
        await _run_late(box, pending[0])
        await redrive(hasty, pool, destination="omnisend")
        state = await box.state()
    assert _cancelled(state, later.order_id), "the cancellation is sent after the old batch ran"
    assert all(o["email"] == "new@example.com" for o in state["orders"].values())
    assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0

"""F13 across processes: one rate budget and one 429 gate per destination, shared through Postgres.

Each "process" is a `SharedRateBudget` on its own pool (its own connections), as two worker
replicas or a worker and a `ledger fanout redrive` run would have. Rates are scaled down
(600/min = 10/s, burst 10) so a run takes seconds; bounds are generous (local wake-up jitter).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from consumers.fanout.budget import Closing, SharedRateBudget, call_with_retries
from consumers.fanout.delivery import Deliverer, Item
from consumers.fanout.delivery_store import FanoutStore
from consumers.fanout.destinations import build_destination
from consumers.fanout.operations import redrive
from consumers.http import Outcome, Success
from ledger.store import create_pool
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import DestinationSettings, StoreSettings
from tests.integration.fanout.support import (
    inbox_count,
    make_settings,
    new_topic,
    publish,
    sandbox,
    wait_for,
    worker,
)
from tests.unit.mapping.story import OrderStory, dumps

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

RATE = 600.0  # per minute: 10 calls/s
PER_SECOND = RATE / 60
BURST = 10.0


@asynccontextmanager
async def _process(database_url: str, destination: str = "omnisend") -> AsyncIterator[SharedRateBudget]:
    """A budget on a pool of its own, as a separate worker process would have."""
    pool = await create_pool(
        database_url, StoreSettings(pool_min_size=1, pool_max_size=4), application_name="budget-test"
    )
    try:
        yield SharedRateBudget(pool, destination, RATE, burst=BURST)
    finally:
        await pool.close()


def _most_in_window(times: list[float], window: float) -> int:
    ordered = sorted(times)
    return max(sum(1 for t in ordered if start <= t < start + window) for start in ordered)


async def test_two_processes_together_stay_within_one_budget(database_url: str) -> None:
    total = 35
    granted: list[tuple[str, float]] = []
    remaining = [total]

    async def caller(name: str, budget: SharedRateBudget) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await budget.acquire()
            granted.append((name, time.monotonic()))

    async with _process(database_url) as a, _process(database_url) as b:
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(caller("a", a) for _ in range(4)), *(caller("b", b) for _ in range(4))), 30
        )
        elapsed = time.monotonic() - started

    times = [t for _, t in granted]
    assert len(times) == total
    by_a = sum(1 for name, _ in granted if name == "a")
    assert 5 <= by_a <= total - 5, f"both processes got calls (a={by_a}, b={total - by_a})"
    for window in (0.5, 1.0, 2.0):
        most = _most_in_window(times, window)
        # budget for the window + the burst + one for the window's edge + one for wake-up jitter
        assert most <= PER_SECOND * window + BURST + 2, f"{most} calls within {window} s"
    # Two separate budgets would have let all 35 through in ~1.5 s; one shared budget cannot.
    assert elapsed >= (total - BURST - 1) / PER_SECOND * 0.8, f"too fast for 10/s: {elapsed:.2f} s"


async def test_a_429_seen_by_one_process_holds_back_the_other(database_url: str) -> None:
    async with _process(database_url) as a, _process(database_url) as b:
        await b.acquire()  # the row exists and b has been calling
        started = time.monotonic()
        await a.hold(1.5)
        await b.acquire()
        waited = time.monotonic() - started
        assert 1.3 <= waited < 10, f"b waited {waited:.2f} s for a's 1.5 s reset window"
        assert b.open_at >= started + 1.3, "b learnt the shared open_at"


async def test_a_hold_pushed_while_waiting_is_honoured(database_url: str) -> None:
    async with _process(database_url) as a, _process(database_url) as b:
        started = time.monotonic()
        await a.hold(1.0)
        waiting = asyncio.create_task(b.acquire())
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await a.hold(2.0)  # a second 429 elsewhere: the window now ends ~2.5 s after start
        await asyncio.wait_for(waiting, 15)
        waited = time.monotonic() - started
        assert 2.2 <= waited < 10, f"b went out after {waited:.2f} s, before the pushed reset"


async def test_shutdown_abandons_a_wait_for_the_shared_gate(database_url: str) -> None:
    calls: list[int] = []

    async def attempt() -> Outcome:
        calls.append(1)
        return Success(200)

    async with _process(database_url) as a, _process(database_url) as b:
        await a.hold(120)
        closing = asyncio.Event()
        task = asyncio.create_task(
            call_with_retries(
                attempt,
                budget=b,
                settings=DestinationSettings(rate_per_minute=RATE),
                closing=closing,
                on_outcome=lambda _: None,
            )
        )
        await asyncio.sleep(0.3)
        started = time.monotonic()
        closing.set()
        with pytest.raises(Closing):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 5
    assert calls == []


# -- the processes that call vendors use the shared budget -----------------------------------


def _events_handler(log: list[tuple[str, float]], status: list[int]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        log.append((body["eventName"], time.monotonic()))
        if status[0] == 202:
            return httpx.Response(202, json={"eventID": body["eventID"]})
        return httpx.Response(status[0], json={"error": "no"})

    return httpx.MockTransport(handler)


async def test_redrive_waits_for_a_429_window_seen_by_a_worker(pool: asyncpg.Pool, database_url: str) -> None:
    settings = make_settings(database_url, "127.0.0.1:9", "unused", mode="events")
    settings.omnisend.base_url = "http://vendor.test"
    calls: list[tuple[str, float]] = []
    status = [422]
    story = OrderStory()
    items = [Item.from_raw(dumps(e), fallback_id="x") for e in story.place()]
    adapter, http = build_destination("omnisend", settings.omnisend, transport=_events_handler(calls, status))
    try:
        await Deliverer(adapter, FanoutStore(pool, "omnisend"), settings.omnisend, Metrics()).handle(
            story.order_id, items
        )
    finally:
        await http.aclose()
    assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 1

    status[0] = 202
    async with _process(database_url) as running_worker:
        started = time.monotonic()
        await running_worker.hold(1.5)  # the worker process just got a 429 with a 1.5 s reset
        results = await redrive(
            settings,
            pool,
            destination="omnisend",
            transport=_events_handler(calls, status),
            metrics=Metrics(),
        )
    assert [(r.delivered, r.stopped) for r in results] == [(1, None)]
    redriven = [t for _, t in calls[1:]]
    assert len(redriven) == 1
    assert redriven[0] >= started + 1.3, "redrive waited for the shared gate"


def _t(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00")).timestamp()


@pytest.mark.kafka
async def test_worker_waits_for_a_429_window_seen_by_another_replica(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    story.place()
    async with sandbox("omnisend") as box, _process(database_url) as other_replica:
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=box, mode="events")
        async with worker("omnisend", settings, pool):
            held_at = time.time()
            await other_replica.hold(2.0)
            held = await pool.fetchval("SELECT updated_at FROM fanout_rate_budget")
            await publish(kafka_bootstrap, topic, story.envelopes)

            async def delivered() -> bool:
                return await inbox_count(pool, "omnisend") >= 1

            await wait_for(delivered, timeout=30, what="the event after the shared window")
        requests = await box.requests()
        assert requests, "the worker called the vendor"
        assert min(_t(r) for r in requests) >= held_at + 1.8, "no call before the shared reset"
        used = await pool.fetchval("SELECT updated_at FROM fanout_rate_budget WHERE destination = 'omnisend'")
        assert used > held, "the worker reserved its call in the shared budget"


async def test_many_orders_at_once_on_a_small_pool_are_all_delivered(database_url: str) -> None:
    """Each order in delivery holds a connection (its lock) and then asks the shared budget for
    another: with as many orders in flight as the pool has connections, none would get one."""
    from types import SimpleNamespace

    from consumers.fanout.worker import _deliver_batch

    settings = DestinationSettings(
        base_url="http://vendor.test", token="t0k", rate_per_minute=60_000.0, timeout_s=2.0, max_attempts=3
    )
    received: list[str] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        received.append(request.url.path)
        return httpx.Response(200, json={"orderID": json.loads(request.content)["orderID"]})

    adapter, http = build_destination("omnisend", settings, transport=httpx.MockTransport(vendor))
    pool = await create_pool(
        database_url, StoreSettings(pool_min_size=1, pool_max_size=3), application_name="t"
    )
    try:
        deliverer = Deliverer(
            adapter, FanoutStore(pool, "omnisend"), settings, Metrics(),
            budget=SharedRateBudget(pool, "omnisend", settings.rate_per_minute),
        )  # fmt: skip
        records = [
            SimpleNamespace(topic="t", partition=0, offset=i, key=None, value=dumps(OrderStory().place()[0]))
            for i in range(12)
        ]
        await asyncio.wait_for(_deliver_batch(deliverer, tuple(records)), 60)
        assert await pool.fetchval("SELECT count(*) FROM fanout_delivery WHERE remote_exists") == 12
    finally:
        await http.aclose()
        await pool.close()
    assert len(received) == 12

"""How the deliverer turns vendor answers into state: at-most-once markers, 404s, odd bodies.

The vendor is an `httpx.MockTransport` handler so each test scripts exact answers (rejections,
exhausted retries, timeouts, broken encodings); the delivery state is real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest

from consumers.fanout.budget import Closing
from consumers.fanout.delivery import Deliverer, Item
from consumers.fanout.delivery_store import FanoutStore
from consumers.fanout.destinations import build_destination
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import DestinationSettings
from tests.unit.mapping.story import OrderStory, dumps, parse

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

Handler = Callable[[httpx.Request], httpx.Response]


def _settings(**extra: Any) -> DestinationSettings:
    values: dict[str, Any] = {
        "base_url": "http://vendor.test",
        "token": "t0k",
        "rate_per_minute": 60_000.0,
        "timeout_s": 2.0,
        "max_attempts": 3,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    values.update(extra)
    return DestinationSettings(**values)


@asynccontextmanager
async def _deliverer(
    name: str, pool: asyncpg.Pool, handler: Handler, closing: asyncio.Event | None = None, **extra: Any
) -> AsyncIterator[Deliverer]:
    settings = _settings(**extra)
    adapter, http = build_destination(name, settings, transport=httpx.MockTransport(handler))
    try:
        yield Deliverer(adapter, FanoutStore(pool, name), settings, Metrics(), closing=closing)
    finally:
        await http.aclose()


def _items(envelopes: list[dict[str, Any]]) -> list[Item]:
    return [Item.from_raw(dumps(e), fallback_id="x") for e in envelopes]


async def _sent(pool: asyncpg.Pool) -> dict[str, str]:
    value = await pool.fetchval("SELECT sent FROM fanout_delivery")
    return dict(value or {})


class _Events:
    """Omnisend /v5/events answering `status` (202 accepts); records (eventName, status)."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        self.calls: list[tuple[str, int]] = []
        self.called = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append((body["eventName"], self.status))
        self.called.set()
        if self.status == 202:
            return httpx.Response(202, json={"eventID": body["eventID"]})
        return httpx.Response(self.status, headers=self.headers, json={"error": "no"})

    @property
    def accepted(self) -> list[str]:
        return [name for name, status in self.calls if status == 202]


# -- Omnisend events mode: the inflight marker only after a possibly accepted call ------------


@pytest.mark.parametrize("status", [422, 503, 429])
async def test_event_definitely_refused_is_sent_by_redrive(pool: asyncpg.Pool, status: int) -> None:
    vendor = _Events(status)
    story = OrderStory()
    async with _deliverer("omnisend", pool, vendor, mode="events") as deliverer:
        placed = _items(story.place())
        await deliverer.handle(story.order_id, placed)
        assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 1
        assert not any(k.startswith("inflight:") for k in await _sent(pool)), "refused: no marker"
        vendor.status = 202  # the vendor recovered / the payload was fixed
        assert await deliverer.redrive(story.order_id) == (1, None)
    assert vendor.accepted == ["placed order"]


async def test_event_timeout_keeps_marker_and_is_never_resent(pool: asyncpg.Pool) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["eventName"])
        raise httpx.ReadTimeout("timed out", request=request)

    story = OrderStory()
    envelopes = story.place()
    async with _deliverer("omnisend", pool, handler, mode="events") as deliverer:
        await deliverer.handle(story.order_id, _items(envelopes))
        assert any(k.startswith("inflight:") for k in await _sent(pool))
        await pool.execute("DELETE FROM fanout_inbox")  # as if the batch came back after a crash
        await deliverer.handle(story.order_id, _items(envelopes))
    assert calls == ["placed order"], "at most once: an ambiguous event is not sent twice"


async def test_shutdown_while_waiting_out_429_forgets_the_event(pool: asyncpg.Pool) -> None:
    vendor = _Events(429, {"Retry-After": "60"})
    closing = asyncio.Event()
    story = OrderStory()
    envelopes = story.place()
    async with _deliverer("omnisend", pool, vendor, closing, mode="events") as deliverer:
        task = asyncio.create_task(deliverer.handle(story.order_id, _items(envelopes)))
        await asyncio.wait_for(vendor.called.wait(), 5)
        closing.set()
        with pytest.raises(Closing):
            await asyncio.wait_for(task, 5)
    assert not any(k.startswith("inflight:") for k in await _sent(pool))
    vendor.status = 202
    async with _deliverer("omnisend", pool, vendor, mode="events") as restarted:
        await restarted.handle(story.order_id, _items(envelopes))
    assert vendor.accepted == ["placed order"], "the restarted worker sends it"


async def test_shutdown_releases_a_call_waiting_for_the_rate_gate(pool: asyncpg.Pool) -> None:
    vendor = _Events(202)
    closing = asyncio.Event()
    story = OrderStory()
    async with _deliverer("omnisend", pool, vendor, closing, mode="events") as deliverer:
        await deliverer.budget.hold(120)  # another order's 429 closed the gate for two minutes
        placed = _items(story.place())
        task = asyncio.create_task(deliverer.handle(story.order_id, placed))
        await asyncio.sleep(0.2)
        closing.set()
        with pytest.raises(Closing):
            await asyncio.wait_for(task, 5)
    assert vendor.calls == []
    assert not any(k.startswith("inflight:") for k in await _sent(pool))


# -- Omneo: an ambiguous create adopts only the order that is ours ----------------------------


def _omneo_create_times_out(listed: list[dict[str, Any]], calls: list[str]) -> Handler:
    """POST /orders times out (ambiguous); the order list answers `listed`; the rest succeeds."""

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.url.path == "/api/v3/orders" and request.method == "POST":
            raise httpx.ReadTimeout("timed out", request=request)
        if request.url.path == "/api/v3/orders":
            return httpx.Response(200, json={"data": listed})
        return httpx.Response(200, json={"data": {"id": 1}})

    return handler


async def test_ambiguous_create_adopts_the_listed_order_with_our_external_id(pool: asyncpg.Pool) -> None:
    story = OrderStory()
    placed = _items(story.place())
    listed = [{"id": 7, "external_id": "SOMEONE-ELSE"}, {"id": 8, "external_id": story.order_id}]
    calls: list[str] = []
    async with _deliverer("omneo", pool, _omneo_create_times_out(listed, calls)) as deliverer:
        await deliverer.handle(story.order_id, placed)
    assert await pool.fetchval("SELECT remote_id FROM fanout_delivery") == "8"
    assert calls.count("POST /api/v3/orders") == 1, "found: no second create"


async def test_ambiguous_create_never_adopts_someone_elses_order(pool: asyncpg.Pool) -> None:
    story = OrderStory()
    listed = [{"id": 7, "external_id": "SOMEONE-ELSE"}]  # a list that ignored the filter
    calls: list[str] = []
    async with _deliverer("omneo", pool, _omneo_create_times_out(listed, calls)) as deliverer:
        placed = _items(story.place() + story.pay("20.00"))
        await deliverer.handle(story.order_id, placed)
    row = await pool.fetchrow("SELECT remote_id, status FROM fanout_delivery")
    assert row is not None
    assert row["remote_id"] is None
    reasons = await pool.fetch("SELECT reason FROM fanout_parked ORDER BY version")
    assert "lookup by external_id failed" in reasons[0]["reason"]
    assert len(reasons) == 2, "the order waits, in order"
    assert calls.count("POST /api/v3/orders") == 1, "no blind second create"
    assert "POST /api/v3/transactions/update-create" not in calls


# -- Omnisend orders: an order deleted on the Omnisend side is created again ------------------


class _Orders:
    """Omnisend /v3/orders keeping orders in `remote`; PUT/PATCH of a missing one is a 404."""

    def __init__(self) -> None:
        self.remote: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        order_id = request.url.path.rsplit("/", 1)[-1]
        body = json.loads(request.content) if request.content else {}
        if request.method == "POST":
            order_id = body["orderID"]
            status = 409 if order_id in self.remote else 200
            if status == 200:
                self.remote[order_id] = body
        elif order_id not in self.remote:
            status = 404
        else:
            status = 200
            self.remote[order_id] = body if request.method == "PUT" else {**self.remote[order_id], **body}
        self.calls.append((request.method, status))
        if status == 200:
            return httpx.Response(200, json={"orderID": order_id})
        return httpx.Response(status, json={"error": "Not found" if status == 404 else "already exists"})


@pytest.mark.parametrize("change", ["note", "payment"])
async def test_update_of_an_order_missing_in_omnisend_creates_it_again(
    pool: asyncpg.Pool, change: str
) -> None:
    vendor = _Orders()
    story = OrderStory()
    async with _deliverer("omnisend", pool, vendor) as deliverer:
        placed = _items(story.place())
        await deliverer.handle(story.order_id, placed)
        vendor.remote.clear()  # deleted in the Omnisend UI, purged, ...
        later = story.update(note="x") if change == "note" else story.pay("20.00")  # PUT / PATCH
        await deliverer.handle(story.order_id, _items(later))
    assert [m for m, _ in vendor.calls] == ["POST", "PUT" if change == "note" else "PATCH", "POST"]
    assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0
    created = vendor.remote[story.order_id]
    assert created["orderSum"], "the whole order, not the patch"
    assert created["products"]
    if change == "payment":
        assert created["paymentStatus"] == "paid"
    assert await pool.fetchval("SELECT remote_exists FROM fanout_delivery") is True


# -- Odd answers and bugs park one order; the batch (and the other orders) go on --------------


async def test_undecodable_body_is_retried_then_parks_the_order(pool: asyncpg.Pool) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    story = OrderStory()
    async with _deliverer("omnisend", pool, handler) as deliverer:
        placed = _items(story.place())
        await deliverer.handle(story.order_id, placed)  # does not raise
    assert len(calls) == 3, "retried up to max_attempts"
    reason = await pool.fetchval("SELECT reason FROM fanout_parked")
    assert "DecodingError" in reason


async def test_unexpected_error_parks_that_order_and_others_flow(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = _Orders()
    broken, fine = OrderStory(), OrderStory()
    async with _deliverer("omnisend", pool, vendor) as deliverer:
        perform = deliverer.destination.perform

        async def buggy(call: Any, row: Any) -> Any:
            if row.order_id == broken.order_id:
                raise RuntimeError("mapping bug")
            return await perform(call, row)

        monkeypatch.setattr(deliverer.destination, "perform", buggy)
        placed = _items(broken.place())
        await deliverer.handle(broken.order_id, placed)
        placed = _items(fine.place())
        await deliverer.handle(fine.order_id, placed)
    parked = await pool.fetch("SELECT order_id, reason FROM fanout_parked")
    assert [(r["order_id"], r["reason"]) for r in parked] == [
        (broken.order_id, "unexpected error: RuntimeError: mapping bug")
    ]
    assert list(vendor.remote) == [fine.order_id]


# -- Replay: a failed replay parks readable envelopes ----------------------------------------


async def test_failed_replay_parks_envelopes_that_redrive_delivers(pool: asyncpg.Pool) -> None:
    state = {"status": 200}
    calls: list[tuple[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, state["status"]))
        if state["status"] != 200:
            return httpx.Response(state["status"], json={"message": "invalid", "errors": {}})
        return httpx.Response(201, json={"data": {"id": 5}})

    story = OrderStory()
    envelopes = story.place() + story.pay("20.00")
    async with _deliverer("omneo", pool, handler) as deliverer:
        await deliverer.handle(story.order_id, _items(envelopes))
        state["status"] = 422  # the mapping fix is not accepted yet
        await deliverer.replay(story.order_id, [parse(envelopes[-1])])
        assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 1
        state["status"] = 200
        assert await deliverer.redrive(story.order_id) == (1, None)
    assert calls[-1] == ("PUT", 200), "redrive re-sent the replayed state"

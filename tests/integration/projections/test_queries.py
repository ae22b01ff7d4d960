"""List queries and routes over the read models: filters, keyset pagination, exact money."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from ledger.store import EventStore
from projections import order_state, queries, transactions
from projections.db import connection
from projections.registry import install
from projections.routes import make_router
from projections.simulate import HistoryGenerator
from tests.integration.projections.support import append_interleaved, drain

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def _project(pool: asyncpg.Pool, store: EventStore, orders: int = 60) -> None:
    await append_interleaved(store, HistoryGenerator(seed=42).histories(orders), seed=42)
    async with connection(pool) as conn:
        for p in (order_state.PROJECTION, transactions.PROJECTION):
            await install(conn, p)
    for p in (order_state.PROJECTION, transactions.PROJECTION):
        await drain(pool, p)


async def test_orders_page_by_updated_at_and_filter_on_every_column(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    await _project(pool, store)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        items, cursor = await queries.list_orders(pool, limit=7, cursor=cursor)
        seen += items
        if cursor is None:
            break
    live = await pool.fetchval("SELECT count(*) FROM order_state WHERE NOT deleted")
    assert len(seen) == live == len({o["id"] for o in seen})
    keys = [(datetime.fromisoformat(o["updated_at"]), o["id"]) for o in seen]
    assert keys == sorted(keys)
    assert all(isinstance(o["total"], Decimal | int) for o in seen)  # exact, never a float

    sample = seen[len(seen) // 2]
    for name in ("status", "payment_status", "fulfillment_status", "external_id", "profile_id"):
        items, _ = await queries.list_orders(pool, **{name: sample[name]}, limit=500)
        assert sample["id"] in {o["id"] for o in items}
        assert all(o[name] == sample[name] for o in items)
    since = datetime.fromisoformat(sample["updated_at"])
    items, _ = await queries.list_orders(pool, updated_since=since, limit=500)
    assert all(datetime.fromisoformat(o["updated_at"]) >= since for o in items)

    with pytest.raises(queries.InvalidQuery):
        await queries.list_orders(pool, cursor="not-a-cursor")


async def test_transactions_filter_by_order_and_time(pool: asyncpg.Pool, store: EventStore) -> None:
    await _project(pool, store)
    everything, _ = await queries.list_transactions(pool, limit=500)
    assert everything
    one = everything[0]
    mine, _ = await queries.list_transactions(pool, order_id=one["order_id"], limit=500)
    assert {t["order_id"] for t in mine} == {one["order_id"]}
    until = datetime.fromisoformat(one["transacted_at"])
    earlier, _ = await queries.list_transactions(pool, until=until, limit=500)
    assert all(datetime.fromisoformat(t["transacted_at"]) < until for t in earlier)
    paged: list[dict[str, Any]] = []
    cursor = None
    while True:
        items, cursor = await queries.list_transactions(
            pool, since=datetime(2000, 1, 1, tzinfo=UTC), limit=5, cursor=cursor
        )
        paged += items
        if cursor is None:
            break
    assert [t["external_id"] for t in paged] == [t["external_id"] for t in everything]


async def test_router_serves_pages_behind_the_injected_scope_check(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    await _project(pool, store, orders=20)
    asked: list[str] = []

    def require_scope(scope: str) -> Callable[[Request], None]:
        def dependency(request: Request) -> None:
            asked.append(scope)
            if request.headers.get("authorization") != "Bearer ok":
                raise HTTPException(401)

        return dependency

    app = FastAPI()
    app.include_router(make_router(require_scope, get_pool=lambda _: pool))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/api/v3/orders")).status_code == 401
        headers = {"authorization": "Bearer ok"}
        page = (await client.get("/api/v3/orders", params={"limit": 5}, headers=headers)).json()
        assert len(page["data"]) == 5
        assert page["next_cursor"]
        following = await client.get(
            "/api/v3/orders", params={"cursor": page["next_cursor"]}, headers=headers
        )
        assert following.status_code == 200
        assert {o["id"] for o in following.json()["data"]}.isdisjoint(o["id"] for o in page["data"])
        raw = (await client.get("/api/v3/transactions", headers=headers)).text
        assert '"total":' in raw
        assert '"next_cursor":null' in raw
        assert (
            await client.get("/api/v3/orders", params={"cursor": "x"}, headers=headers)
        ).status_code == 422
    assert set(asked) == {"orders:read"}

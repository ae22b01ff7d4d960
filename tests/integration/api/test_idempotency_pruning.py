"""The API prunes idempotency keys past their TTL by itself, so the key table does not grow forever."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from ledger_app.api import create_app
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import Settings, StoreSettings
from tests.integration.api.conftest import make_tokens

pytestmark = pytest.mark.postgres

BODY = {"total": 5, "items": [{"name": "Pin", "quantity": 1, "price_sell": 5}]}


async def _keys(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM idempotency_keys")
    return count


async def test_keys_older_than_the_ttl_are_pruned_while_the_api_runs(
    pool: asyncpg.Pool, database_url: str
) -> None:
    tokens = await make_tokens(pool)
    headers = {"Authorization": f"Bearer {tokens['all']}", "Idempotency-Key": "prune-me-0123456789abcdef"}
    kept = Settings(database_url=database_url)
    app = create_app(kept, pool=pool, metrics=Metrics())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.post("/api/v3/orders", json=BODY, headers=headers)).status_code == 201
    assert await _keys(pool) == 1  # within the TTL: kept

    expiring = Settings(
        database_url=database_url,
        store=StoreSettings(idempotency_ttl_hours=0, idempotency_prune_interval_s=0.05),
    )
    app = create_app(expiring, pool=pool, metrics=Metrics())
    async with app.router.lifespan_context(app):
        for _ in range(100):
            if await _keys(pool) == 0:
                break
            await asyncio.sleep(0.05)
    assert await _keys(pool) == 0

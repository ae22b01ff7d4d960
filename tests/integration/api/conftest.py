"""An API app per test on a fresh migrated database, served in-process over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest_asyncio
from fastapi import FastAPI

from ledger.api.auth import SCOPES, TokenStore
from ledger_app.api import create_app
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import ApiSettings, Settings
from projections.setup import install_projections


@dataclass
class Api:
    """The app under test, a client, and one token per scope (plus `all`)."""

    app: FastAPI
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    tokens: dict[str, str]

    def auth(self, scope: str = "all", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}", **extra}

    async def event_count(self) -> int:
        count: int = await self.pool.fetchval("SELECT count(*) FROM events")
        return count


async def make_tokens(pool: asyncpg.Pool) -> dict[str, str]:
    store = TokenStore(pool)
    tokens = {scope: (await store.create(f"t-{scope}", [scope]))[0] for scope in SCOPES}
    tokens["all"] = (await store.create("checkout", ["orders:write", "orders:read", "audit:read"]))[0]
    tokens["other"] = (await store.create("other-client", ["orders:write", "orders:read"]))[0]
    return tokens


@pytest_asyncio.fixture(loop_scope="session")
async def api(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[Api]:
    await install_projections(database_url)  # as `ledger migrate` does: the list routes read them
    settings = Settings(database_url=database_url, api=ApiSettings(max_lines=50))
    app = create_app(settings, pool=pool, metrics=Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            yield Api(app, client, pool, await make_tokens(pool))

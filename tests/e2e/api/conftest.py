"""The API served by a real uvicorn server on a free loopback port (real sockets, real concurrency)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest_asyncio
import uvicorn
from pydantic import SecretStr

from ledger.api.headers import server_options
from ledger.privacy import Keyring
from ledger_app.api import create_app
from ledger_app.dev.broker import free_port
from ledger_kernel.settings import ApiSettings, PrivacySettings, Settings, StoreSettings
from projections.setup import install_projections
from tests.integration.api.conftest import make_tokens


@dataclass
class LiveApi:
    url: str
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    tokens: dict[str, str]

    def auth(self, scope: str = "all", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}", "Content-Type": "application/json", **extra}

    async def event_count(self) -> int:
        count: int = await self.pool.fetchval("SELECT count(*) FROM events")
        return count


@pytest_asyncio.fixture(loop_scope="session")
async def live_api(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[LiveApi]:
    await install_projections(database_url)  # as `ledger migrate` does: the list routes read them
    port = free_port()
    settings = Settings(
        database_url=database_url,
        api=ApiSettings(port=port),
        store=StoreSettings(pool_min_size=2, pool_max_size=10),
        # Personal data sealed, as deployed (docs/privacy.md): the /subjects routes answer.
        privacy=PrivacySettings(kek=SecretStr(Keyring.generate_base64())),
    )
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        **server_options(),
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start"
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
        ) as client:
            yield LiveApi(f"http://127.0.0.1:{port}", client, pool, await make_tokens(pool))
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

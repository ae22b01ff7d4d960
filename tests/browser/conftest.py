"""The console in a real headless Chromium (Debian's `chromium`, driven by Playwright for Python).

The API process is `ledger_app.api.create_app` served by uvicorn on a free loopback port over
the harness's real PostgreSQL; Omneo is the local sandbox on loopback. Browser downloads are
impossible here, so Playwright is pointed at `/usr/bin/chromium` (`scripts/test` installs it)
and `playwright install` is never called. Screenshots go to `tests/artifacts/console/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Page, async_playwright

from ledger.api.auth import TokenStore
from ledger.api.headers import server_options
from ledger_app.api import create_app
from ledger_app.dev.broker import free_port
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import ApiSettings, ConsoleSettings, StoreSettings
from projections import order_state
from projections.definition import Projection
from projections.rebuild import RebuildReport, rebuild
from projections.runner import Runner
from projections.setup import install_projections
from tests.integration.fanout.support import Sandbox, make_settings, sandbox
from tests.integration.projections.support import wait_caught_up

CHROMIUM = os.environ.get("LEDGER_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"



@dataclass
class Gate:
    """Holds a console-started rebuild just before verification, so the test can watch it."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Console:
    url: str
    pool: asyncpg.Pool
    tokens: dict[str, str]
    omneo: Sandbox
    gate: Gate
    client: httpx.AsyncClient
    browser: Browser

    async def place(self, body: dict[str, Any]) -> str:
        response = await self.client.post(
            "/api/v3/orders",
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {self.tokens['writer']}", "Content-Type": "application/json"},
        )
        assert response.status_code == 201, response.text
        order_id: str = response.json()["data"]["id"]
        return order_id

    async def command(self, path: str, body: dict[str, Any]) -> None:
        response = await self.client.post(
            path,
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {self.tokens['writer']}", "Content-Type": "application/json"},
        )
        assert response.status_code in (200, 201), response.text

    async def read_model_caught_up(self) -> None:
        """The order_state runner (live version) has applied every event appended so far."""
        await wait_caught_up(self.pool, order_state.PROJECTION, order_state.PROJECTION.version)

    async def page(self) -> Page:
        context = await self.browser.new_context(viewport={"width": 1280, "height": 900})
        return await context.new_page()

    async def signed_in(self, token: str) -> Page:
        page = await self.page()
        await page.goto(f"{self.url}/console/orders")
        await page.fill("#token", self.tokens[token])
        await page.click("#signin")
        await page.wait_for_selector("#who")
        return page


async def screenshot(page: Page, name: str) -> Path:
    """Keep a screenshot as a test artifact and print where it is."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium: scripts/test installs it; without it the tier fails saying so (no skip)."""
    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test does)"
    return CHROMIUM


@pytest_asyncio.fixture(loop_scope="session")
async def console(pool: asyncpg.Pool, database_url: str, chromium: str) -> AsyncIterator[Console]:
    await install_projections(database_url)
    gate = Gate()
    next_version: Projection = dataclasses.replace(order_state.PROJECTION, version=order_state.PROJECTION.version + 1)

    async def gated_rebuild(db: asyncpg.Pool, projection: Projection, **options: Any) -> RebuildReport:
        async def hold(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
            gate.reached.set()
            await gate.release.wait()

        return await rebuild(db, projection, before_verify=hold, **options)

    store = TokenStore(pool)
    tokens = {
        "admin": (await store.create("operator-ann", ["admin"]))[0],
        "readonly": (await store.create("auditor-bob", ["orders:read", "audit:read"]))[0],
        "writer": (await store.create("checkout", ["orders:write", "orders:read"]))[0],
    }
    runner = Runner(pool, order_state.PROJECTION, batch_size=200, poll_interval_s=0.05, metrics=Metrics())
    runner_task = asyncio.get_running_loop().create_task(runner.run())
    async with sandbox("omneo") as omneo:
        port = free_port()
        settings = make_settings(database_url, "127.0.0.1:9", "orders.events", omneo=omneo)
        settings = settings.model_copy(
            update={
                "api": ApiSettings(port=port),
                "store": StoreSettings(pool_min_size=2, pool_max_size=10),
                "console": ConsoleSettings(chart_interval_s=0.5),
            }
        )
        app = create_app(
            settings,
            console={"projections": {"order_state": next_version}, "rebuilder": gated_rebuild},
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **server_options())
        )
        task = asyncio.get_running_loop().create_task(server.serve())
        try:
            for _ in range(500):
                if server.started:
                    break
                await asyncio.sleep(0.02)
            assert server.started, "uvicorn did not start"
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
                async_playwright() as playwright,
            ):
                browser = await playwright.chromium.launch(
                    executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"]
                )
                try:
                    yield Console(f"http://127.0.0.1:{port}", pool, tokens, omneo, gate, client, browser)
                finally:
                    await browser.close()
        finally:
            gate.release.set()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
            runner.stop()
            await asyncio.wait_for(runner_task, 15)

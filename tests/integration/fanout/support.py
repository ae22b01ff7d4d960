"""Shared pieces of the fan-out end-to-end tests: sandboxes, settings, a worker task, waits.

Everything is real: PostgreSQL (harness `database_url`/`pool`), the session broker
(`kafka_bootstrap`), the sandboxes as HTTP servers on loopback. Envelopes are built with the
domain (tests/unit/mapping/story.py) and produced to a per-test topic.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from consumers.fanout.worker import run_worker
from consumers.sandbox import (
    OmneoConfig,
    OmnisendConfig,
    SandboxApp,
    create_omneo_app,
    create_omnisend_app,
    run_in_background,
)
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import DestinationSettings, Settings
from tests.harness.kafka import create_topic, produce
from tests.unit.mapping.story import dumps


@dataclass
class Sandbox:
    app: SandboxApp
    url: str
    token: str

    async def requests(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url) as c:
            body: dict[str, Any] = (await c.get("/_sandbox/requests")).json()
        return list(body["requests"])

    async def state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as c:
            body: dict[str, Any] = (await c.get("/_sandbox/state")).json()
        return body

    async def fault(self, spec: dict[str, Any]) -> None:
        async with httpx.AsyncClient(base_url=self.url) as c:
            (await c.post("/_sandbox/faults", json=spec)).raise_for_status()

    async def clear_faults(self) -> None:
        async with httpx.AsyncClient(base_url=self.url) as c:
            await c.delete("/_sandbox/faults")


@asynccontextmanager
async def sandbox(vendor: str, **config: Any) -> AsyncIterator[Sandbox]:
    if vendor == "omneo":
        omneo_cfg = OmneoConfig(**config)
        app: SandboxApp = create_omneo_app(omneo_cfg)
        token = omneo_cfg.token
    else:
        omnisend_cfg = OmnisendConfig(**config)
        app = create_omnisend_app(omnisend_cfg)
        token = omnisend_cfg.token
    url, stop = await run_in_background(app)
    try:
        yield Sandbox(app, url, token)
    finally:
        await stop()


def make_settings(
    database_url: str,
    bootstrap: str,
    topic: str,
    *,
    omneo: Sandbox | None = None,
    omnisend: Sandbox | None = None,
    mode: str = "orders",
    **dest: Any,
) -> Settings:
    """Fast retries (tests must not wait minutes) and a consumer group of the test's own."""
    group = uuid.uuid4().hex[:8]

    def one(box: Sandbox | None, name: str, **extra: Any) -> DestinationSettings:
        values: dict[str, Any] = {
            "base_url": box.url if box else "http://127.0.0.1:9",
            "token": box.token if box else "none",
            "rate_per_minute": 60_000.0,
            "timeout_s": 2.0,
            "max_attempts": 6,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.5,
            "group_id": f"fanout-{name}-{group}",
        }
        values.update(extra)
        values.update(dest)
        return DestinationSettings(**values)

    settings = Settings(database_url=database_url, kafka_bootstrap_servers=bootstrap)
    settings.kafka.events_topic = topic
    settings.omneo = one(omneo, "omneo")
    settings.omnisend = one(omnisend, "omnisend", mode=mode)
    return settings


async def publish(bootstrap: str, topic: str, envelopes: list[dict[str, Any]]) -> None:
    await produce(bootstrap, topic, [(e["order_id"].encode(), dumps(e)) for e in envelopes])


async def new_topic(bootstrap: str, topic: str) -> str:
    await create_topic(bootstrap, topic, partitions=3)
    return topic


@asynccontextmanager
async def worker(
    destination: str, settings: Settings, pool: asyncpg.Pool, metrics: Metrics | None = None
) -> AsyncIterator[asyncio.Task[int]]:
    """Run `run_worker` as a task; stopped (SIGTERM-like) on exit."""
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        run_worker(destination, settings, stop=stop, pool=pool, metrics=metrics or Metrics(), started=started)
    )
    waiter = asyncio.ensure_future(started.wait())
    await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED, timeout=30)
    if task.done():
        task.result()
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def wait_for(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or check}")


async def inbox_count(pool: asyncpg.Pool, destination: str) -> int:
    value = await pool.fetchval("SELECT count(*) FROM fanout_inbox WHERE destination = $1", destination)
    return int(value)

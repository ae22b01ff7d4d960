"""PostgreSQL frozen under HTTP load: the API answers fast 503s, leaks no task, recovers alone.

A private embedded PostgreSQL (not the session's: every other test would freeze with it) is
SIGSTOPped (postmaster and every backend) for 30 s while clients keep reading and writing
orders through a real uvicorn server, then SIGCONTed. While it is frozen, every request is
answered, before the server is resumed, with a 503 problem and `Retry-After` (the request
deadline, `api.request_timeout_s`); afterwards the same server process serves reads and writes
again, and the asyncio tasks abandoned at the deadline have all ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn

from ledger.api.app import create_app
from ledger.api.headers import server_options
from ledger_app.dev.broker import free_port
from ledger_app.dev.embedded import start_embedded_postgres, stop_embedded_postgres
from ledger_app.migrations import migrate_all
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import ApiSettings, Settings, StoreSettings
from tests.harness.postgres import dsn_with_database
from tests.integration.api.conftest import make_tokens

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

STALL_S = 30.0
DEADLINE_S = 2.0
CLIENTS = 4
ORDER = b'{"currency": "AUD", "items": [{"name": "Cap", "quantity": 1, "price_sell": 10}]}'


def server_pids(pgdata: Path) -> list[int]:
    """The postmaster (first line of postmaster.pid) and every process it forked."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == postmaster:
                children.append(int(entry))
    return [postmaster, *children]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Answer:
    started: float
    received: float
    status: int
    content_type: str
    retry_after: str | None


@dataclass
class Load:
    """Clients that read and place orders in a loop, recording every answer."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    order_id: str
    answers: list[Answer] = field(default_factory=list)
    running: bool = True
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, n: int) -> None:
        while self.running:
            started = time.monotonic()
            if n % 2:
                response = await self.client.post("/api/v3/orders", content=ORDER, headers=self.headers)
            else:
                response = await self.client.get(f"/api/v3/orders/{self.order_id}", headers=self.headers)
            self.answers.append(
                Answer(
                    started,
                    time.monotonic(),
                    response.status_code,
                    response.headers.get("content-type", ""),
                    response.headers.get("retry-after"),
                )
            )
            self.changed.set()
            await asyncio.sleep(0.05)

    async def wait_for(self, predicate: object, timeout: float) -> None:
        assert callable(predicate)
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[tuple[str, Path]]:
    """A server of our own under /tmp (pytest's tmp_path is 0700 root: the wheel's postgres user
    could not enter it), as the session harness makes its embedded one."""
    with tempfile.TemporaryDirectory(prefix="ledger-stall-") as folder:
        async with _server(Path(folder) / "pgdata") as started:
            yield started


@contextlib.asynccontextmanager
async def _server(pgdata: Path) -> AsyncIterator[tuple[str, Path]]:
    admin = await asyncio.to_thread(start_embedded_postgres, pgdata)
    try:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute("CREATE DATABASE stall")
        finally:
            await conn.close()
        dsn = dsn_with_database(admin, "stall")
        await migrate_all(dsn)
        yield dsn, pgdata
    finally:
        with contextlib.suppress(Exception):
            signal_all(server_pids(pgdata), signal.SIGCONT)
        await asyncio.to_thread(stop_embedded_postgres, pgdata)


async def test_a_frozen_postgres_gets_fast_503s_no_task_leak_and_recovery_without_restart() -> None:
    async with private_postgres() as (dsn, pgdata):
        setup = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        tokens = await make_tokens(setup)
        await setup.close()
        port = free_port()
        settings = Settings(
            database_url=dsn,
            api=ApiSettings(port=port, request_timeout_s=DEADLINE_S),
            store=StoreSettings(pool_min_size=2, pool_max_size=6),
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, metrics=Metrics()),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
                **server_options(),
            )
        )
        serving = asyncio.get_running_loop().create_task(server.serve())
        try:
            for _ in range(1200):  # uvicorn has no started event to await
                if server.started:
                    break
                await asyncio.sleep(0.05)
            assert server.started, "uvicorn did not start"
            headers = {"Authorization": f"Bearer {tokens['all']}", "Content-Type": "application/json"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                placed = await client.post("/api/v3/orders", content=ORDER, headers=headers)
                assert placed.status_code == 201, placed.text
                baseline = len(asyncio.all_tasks())
                load = Load(client, headers, placed.json()["data"]["id"])
                workers = [asyncio.get_running_loop().create_task(load.run(n)) for n in range(CLIENTS)]
                await load.wait_for(lambda: sum(a.status in (200, 201) for a in load.answers) >= 4, 60)

                pids = server_pids(pgdata)
                stopped_at = time.monotonic()
                signal_all(pids, signal.SIGSTOP)
                try:
                    await asyncio.sleep(STALL_S)  # the stall itself; the evidence is in the answers
                finally:
                    resumed_at = time.monotonic()
                    signal_all(pids, signal.SIGCONT)

                await load.wait_for(
                    lambda: sum(a.started > resumed_at and a.status in (200, 201) for a in load.answers) >= 4,
                    120,
                )
                load.running = False
                await asyncio.gather(*workers)
                # the requests abandoned at the deadline end once the database answers again
                for _ in range(1200):  # a task's end has no event to await from outside it
                    if len(asyncio.all_tasks()) <= baseline:
                        break
                    await asyncio.sleep(0.1)
                after = len(asyncio.all_tasks())
                again = await client.get(f"/api/v3/orders/{load.order_id}", headers=headers)
        finally:
            server.should_exit = True
            await asyncio.wait_for(serving, 30)

    during = [a for a in load.answers if a.started > stopped_at + DEADLINE_S and a.received < resumed_at]
    late = [a for a in load.answers if stopped_at + DEADLINE_S < a.started < resumed_at - 3 * DEADLINE_S]
    print(
        json.dumps(
            {
                "answers": len(load.answers),
                "during_stall": len(during),
                "statuses_during": sorted({a.status for a in during}),
                "tasks_before": baseline,
                "tasks_after": after,
            }
        )
    )
    assert len(during) >= CLIENTS  # requests kept being answered while PostgreSQL was frozen
    assert {a.status for a in during} == {503}
    assert all(a.content_type == "application/problem+json" and a.retry_after for a in during)
    # nothing sent while frozen waited for the resume: each answer came while still frozen
    assert all(a.received < resumed_at for a in late)
    assert after <= baseline
    assert again.status_code == 200, again.text

"""`ledger api` serves from several worker processes, and its metrics count every worker's requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from ledger_app.cli import api_workers
from ledger_app.dev.broker import free_port, wait_for_port
from projections.setup import install_projections
from tests.integration.api.conftest import make_tokens

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[3]
ORDER = {"total": 10, "items": [{"name": "Cap", "quantity": 1, "price_sell": 10}]}
ORDERS = 12


def test_the_worker_count_is_the_option_else_the_setting_else_one_per_core() -> None:
    assert api_workers(3, 2, 8) == 3
    assert api_workers(None, 2, 8) == 2
    assert api_workers(None, None, 8) == 8
    assert api_workers(None, None, None) == 1


@contextmanager
def _ledger_api(database_url: str, port: int, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    environment = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_LOG_LEVEL": "WARNING", **env}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "ledger_app.cli", "api", "--host", "127.0.0.1", "--port", str(port), *args],
        cwd=REPO,
        env=environment,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=60)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not exposed:\n{text}")


async def _place_orders(url: str, token: str) -> list[int]:
    """`ORDERS` orders, each on a new connection, so the kernel hands them to any worker."""
    statuses = []
    for _ in range(ORDERS):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post(
                "/api/v3/orders", json=ORDER, headers={"Authorization": f"Bearer {token}"}
            )
            statuses.append(response.status_code)
    return statuses


async def test_two_workers_place_orders_and_metrics_add_up_every_workers_requests(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await install_projections(database_url)
    token = (await make_tokens(pool))["all"]
    port = free_port()
    with _ledger_api(database_url, port, "--workers", "2"):
        url = f"http://127.0.0.1:{port}"
        statuses = await _place_orders(url, token)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            scraped = (await client.get("/metrics")).text

    assert statuses == [201] * ORDERS
    assert await pool.fetchval("SELECT count(*) FROM events") == ORDERS
    assert (
        _sample(scraped, 'ledger_http_requests_total{method="POST",route="/api/v3/orders",status="201"}')
        == ORDERS
    )
    assert _sample(scraped, "ledger_appended_events_total") == ORDERS


async def test_with_workers_the_metrics_port_is_served_once_for_all_of_them(
    pool: asyncpg.Pool, database_url: str
) -> None:
    await install_projections(database_url)
    token = (await make_tokens(pool))["all"]
    port, metrics_port = free_port(), free_port()
    with _ledger_api(database_url, port, "--workers", "2", LEDGER_API__METRICS_PORT=str(metrics_port)):
        url = f"http://127.0.0.1:{port}"
        statuses = await _place_orders(url, token)
        async with httpx.AsyncClient(timeout=30) as client:
            on_api = await client.get(f"{url}/metrics")
            on_port = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text

    assert statuses == [201] * ORDERS
    assert on_api.status_code == 404
    assert (
        _sample(on_port, 'ledger_http_requests_total{method="POST",route="/api/v3/orders",status="201"}')
        == ORDERS
    )
    assert _sample(on_port, "ledger_fence_lag_seconds") >= 0.0

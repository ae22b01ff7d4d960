"""The API process exposes the ledger's metrics: append latency, appended events, fence lag, requests."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from ledger.api.app import create_app
from ledger_app.dev.broker import free_port
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import ApiSettings, Settings
from tests.integration.api.conftest import Api

pytestmark = pytest.mark.postgres


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exposed")


async def test_metrics_expose_append_latency_events_fence_lag_and_requests(api: Api) -> None:
    body = {"external_id": "M-1", "total": 10, "items": [{"name": "Cap", "quantity": 1, "price_sell": 10}]}
    placed = await api.client.post("/api/v3/orders", json=body, headers=api.auth())
    assert placed.status_code == 201, placed.text

    scraped = await api.client.get("/metrics")

    assert scraped.status_code == 200
    text = scraped.text
    assert _sample(text, 'ledger_append_seconds_count{outcome="appended"}') == 1.0
    assert _sample(text, "ledger_appended_events_total") == 1.0
    assert _sample(text, "ledger_fence_lag_seconds") >= 0.0
    assert 'ledger_http_requests_total{method="POST",route="/api/v3/orders",status="201"} 1.0' in text


async def test_made_up_http_methods_are_counted_as_other_not_one_series_each(api: Api) -> None:
    for i in range(5):
        await api.client.request(f"FOO{i}", "/api/v3/orders", headers=api.auth())

    text = (await api.client.get("/metrics")).text

    assert not any(f'method="FOO{i}"' in text for i in range(5)), text
    assert 'ledger_http_requests_total{method="other",route="/api/v3/orders",status="405"} 5.0' in text


async def test_a_metrics_token_setting_makes_metrics_answer_401_without_it(
    pool: asyncpg.Pool, database_url: str
) -> None:
    settings = Settings(database_url=database_url, api=ApiSettings(metrics_token=SecretStr("scrape-me")))
    app = create_app(settings, pool=pool, metrics=Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            anonymous = await client.get("/metrics")
            wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
            documented = (await client.get("/openapi.json")).json()
    assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert "ledger_http_requests_total" in right.text
    assert documented["paths"]["/metrics"]["get"]["security"] == [{"metrics": []}]


async def test_a_metrics_port_setting_serves_metrics_there_and_not_on_the_api(
    pool: asyncpg.Pool, database_url: str
) -> None:
    port = free_port()
    settings = Settings(database_url=database_url, api=ApiSettings(metrics_port=port))
    app = create_app(settings, pool=pool, metrics=Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            on_api = await client.get("/metrics")
        async with httpx.AsyncClient() as side:
            on_port = await side.get(f"http://127.0.0.1:{port}/metrics")
    assert on_api.status_code == 404
    assert on_port.status_code == 200
    assert "ledger_fence_lag_seconds" in on_port.text

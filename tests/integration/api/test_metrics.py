"""The API process exposes the ledger's metrics: append latency, appended events, fence lag, requests."""

from __future__ import annotations

import pytest

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

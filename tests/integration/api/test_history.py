"""Temporal reads (?at, ?version), the order's history and the global audit feed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tests.integration.api.conftest import Api

ORDER = b'{"currency": "USD", "total": 20, "items": [{"line_id": "A", "name": "Mug", "quantity": 2, "price_sell": 10}]}'


async def test_an_order_reads_as_it_was_at_a_version_or_a_time(api: Api) -> None:
    headers = api.auth(**{"Content-Type": "application/json"})
    oid = (await api.client.post("/api/v3/orders", content=ORDER, headers=headers)).json()["data"]["id"]
    await asyncio.sleep(0.01)
    between = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await api.client.put(f"/api/v3/orders/{oid}", content=b'{"status": "processing"}', headers=headers)
    await api.client.post(
        f"/api/v3/orders/{oid}/payments", content=b'{"kind": "captured", "amount": 20}', headers=headers
    )

    current = (await api.client.get(f"/api/v3/orders/{oid}", headers=headers)).json()["data"]
    assert (current["version"], current["status"], current["payment_status"]) == (3, "processing", "paid")

    v1 = await api.client.get(f"/api/v3/orders/{oid}?version=1", headers=headers)
    assert v1.headers["etag"] == '"1"'
    assert (v1.json()["data"]["status"], v1.json()["data"]["payment_status"]) == (
        "pending",
        "awaitingPayment",
    )
    v2 = (await api.client.get(f"/api/v3/orders/{oid}?version=2", headers=headers)).json()["data"]
    assert (v2["status"], v2["payment_status"]) == ("processing", "awaitingPayment")
    missing = await api.client.get(f"/api/v3/orders/{oid}?version=9", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["current_version"] == 3

    at = await api.client.get(f"/api/v3/orders/{oid}?at={quote(between.isoformat())}", headers=headers)
    assert at.json()["data"]["version"] == 1
    before = await api.client.get(f"/api/v3/orders/{oid}?at=2000-01-01T00:00:00Z", headers=headers)
    assert before.status_code == 404
    naive = await api.client.get(f"/api/v3/orders/{oid}?at=2030-01-01T00:00:00", headers=headers)
    assert naive.status_code == 422  # a time without an offset is a validation error like any other


async def test_the_audit_feed_filters_and_pages_without_gaps(api: Api) -> None:
    writer = api.auth(**{"Content-Type": "application/json"})
    other = api.auth("other", **{"Content-Type": "application/json"})
    ids = [
        (await api.client.post("/api/v3/orders", content=ORDER, headers=headers)).json()["data"]["id"]
        for headers in (writer, other, writer)
    ]
    await api.client.post(f"/api/v3/orders/{ids[0]}/cancel", content=b"{}", headers=writer)

    auditor = api.auth("audit:read")
    # The feed reads through the xid8 fence, which any open writer on the (shared) server holds
    # back: wait until our four events are visible before paging.
    for _ in range(200):
        if len((await api.client.get("/api/v3/events", headers=auditor)).json()["data"]) == 4:
            break
        await asyncio.sleep(0.05)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = "/api/v3/events?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.client.get(url, headers=auditor)).json()
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["type"] for e in seen] == ["OrderPlaced"] * 3 + ["OrderCanceled"]
    assert len({e["event_id"] for e in seen}) == 4
    assert [e["position"] for e in seen] == sorted(e["position"] for e in seen)
    first = seen[0]
    assert set(first) >= {"version", "position", "type", "data", "metadata", "recorded_at"}
    assert set(first["metadata"]) >= {
        "actor",
        "source",
        "correlation_id",
        "causation_id",
        "idempotency_key",
        "request_id",
    }

    by_actor = (await api.client.get("/api/v3/events?actor=other-client", headers=auditor)).json()["data"]
    assert [e["order_id"] for e in by_actor] == [ids[1]]
    by_type = (await api.client.get("/api/v3/events?type=OrderCanceled", headers=auditor)).json()["data"]
    assert [e["order_id"] for e in by_type] == [ids[0]]
    by_order = (await api.client.get(f"/api/v3/events?order_id={ids[2]}", headers=auditor)).json()["data"]
    assert len(by_order) == 1
    future = quote(datetime(2100, 1, 1, tzinfo=UTC).isoformat())
    assert (await api.client.get(f"/api/v3/events?since={future}", headers=auditor)).json()["data"] == []
    by_source = (await api.client.get("/api/v3/events?source=kafka", headers=auditor)).json()["data"]
    assert by_source == []
    assert json.loads((await api.client.get("/api/v3/events?limit=500", headers=auditor)).content)["data"]
    assert (await api.client.get("/api/v3/events?limit=100000", headers=auditor)).status_code == 422


async def test_health_readiness_metrics_and_openapi(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    assert (await api.client.get("/readyz")).json() == {"status": "ok"}
    await api.client.get("/api/v3/events")
    metrics = (await api.client.get("/metrics")).text
    assert 'ledger_http_requests_total{method="GET",route="/api/v3/events",status="401"} 1.0' in metrics
    spec = (await api.client.get("/openapi.json")).json()
    assert "PlaceOrder" in spec["components"]["schemas"]
    post = spec["paths"]["/api/v3/orders"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PlaceOrder")
    assert (await api.client.get("/docs")).status_code == 200


async def test_a_database_outage_is_503_with_retry_after_not_500(database_url: str) -> None:
    import httpx

    from ledger.store import create_pool
    from ledger_app.api import create_app
    from ledger_kernel.settings import Settings

    pool = await create_pool(database_url)
    app = create_app(Settings(database_url=database_url), pool=pool)
    async with app.router.lifespan_context(app):
        await pool.close()  # the database goes away under the running app
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.post(
                "/api/v3/orders",
                content=ORDER,
                headers={"Authorization": "Bearer lgr_x", "Content-Type": "application/json"},
            )
            assert response.status_code == 503
            assert response.headers["retry-after"]
            assert response.headers["content-type"] == "application/problem+json"
            ready = await client.get("/readyz")
            assert ready.status_code == 503

"""Concurrent writers over real HTTP: optimistic concurrency (F6) and idempotency keys (F3, F4)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.e2e.api.conftest import LiveApi

pytestmark = pytest.mark.e2e

ORDER = {
    "currency": "EUR",
    "total": 50,
    "items": [{"line_id": "A", "name": "Scarf", "quantity": 5, "price_sell": 10}],
}


async def place(api: LiveApi) -> str:
    response = await api.client.post("/api/v3/orders", content=json.dumps(ORDER), headers=api.auth())
    assert response.status_code == 201, response.text
    order_id: str = response.json()["data"]["id"]
    return order_id


async def test_twenty_writers_with_the_same_if_match_one_wins_the_rest_get_the_current_version(
    live_api: LiveApi,
) -> None:
    oid = await place(live_api)

    async def ship(i: int) -> tuple[int, dict[str, object]]:
        response = await live_api.client.post(
            f"/api/v3/orders/{oid}/shipments",
            content=json.dumps({"shipment_id": f"S{i}", "lines": [{"line_id": "A", "quantity": 1}]}),
            headers=live_api.auth(**{"If-Match": '"1"'}),
        )
        return response.status_code, response.json()

    results = await asyncio.gather(*(ship(i) for i in range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * 19
    for status, problem in results:
        if status == 409:
            assert problem["type"] == "urn:order-ledger:problem:version-conflict"
            assert problem["current_version"] == 2
    versions = await live_api.pool.fetch("SELECT version FROM events ORDER BY version")
    assert [r["version"] for r in versions] == [1, 2]


async def test_fifty_requests_with_one_idempotency_key_place_one_order(live_api: LiveApi) -> None:
    key = str(uuid.uuid4())
    headers = live_api.auth(**{"Idempotency-Key": key})

    async def post() -> tuple[int, bytes]:
        response = await live_api.client.post("/api/v3/orders", content=json.dumps(ORDER), headers=headers)
        return response.status_code, response.content

    results = await asyncio.gather(*(post() for _ in range(50)))
    completed = {content for status, content in results if status == 201}
    in_progress = [content for status, content in results if status == 409]
    assert len(completed) == 1, "every completed response is byte-identical"
    assert all(b"idempotency-in-progress" in c for c in in_progress)
    assert {status for status, _ in results} <= {201, 409}
    assert await live_api.event_count() == 1

    retries = [await post() for _ in range(5)]
    assert {(s, c) for s, c in retries} == {(201, next(iter(completed)))}

    changed = dict(
        ORDER, total=60, items=[{"line_id": "A", "name": "Scarf", "quantity": 6, "price_sell": 10}]
    )
    reused = await live_api.client.post("/api/v3/orders", content=json.dumps(changed), headers=headers)
    assert reused.status_code == 422
    assert reused.json()["type"] == "urn:order-ledger:problem:idempotency-key-reused"

    other_client = await live_api.client.post(
        "/api/v3/orders",
        content=json.dumps(ORDER),
        headers=live_api.auth("other", **{"Idempotency-Key": key}),
    )
    assert other_client.status_code == 201, "keys are scoped per client"
    assert other_client.content != next(iter(completed))
    assert await live_api.event_count() == 2

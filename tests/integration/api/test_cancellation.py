"""Cancellation reads the same through every route: the order, and the `order_state` list filter."""

from __future__ import annotations

import pytest

from projections import order_state
from tests.integration.api.conftest import Api
from tests.integration.projections.support import drain

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

ORDER = (
    b'{"currency": "AUD", "status": "pending", "items": [{"name": "Cap", "quantity": 1, "price_sell": 10}]}'
)


async def test_an_order_canceled_by_the_endpoint_or_by_put_reads_and_lists_as_cancelled(api: Api) -> None:
    headers = api.auth(**{"Content-Type": "application/json"})
    ids = []
    for _ in range(3):
        placed = await api.client.post("/api/v3/orders", content=ORDER, headers=headers)
        assert placed.status_code == 201, placed.text
        ids.append(placed.json()["data"]["id"])
    by_endpoint = await api.client.post(f"/api/v3/orders/{ids[0]}/cancel", content=b"{}", headers=headers)
    by_put = await api.client.put(
        f"/api/v3/orders/{ids[1]}", content=b'{"status": "cancelled"}', headers=headers
    )
    assert by_endpoint.status_code == by_put.status_code == 200, (by_endpoint.text, by_put.text)
    assert by_endpoint.json()["data"]["status"] == by_put.json()["data"]["status"] == "cancelled"
    for oid in ids[:2]:
        got = await api.client.get(f"/api/v3/orders/{oid}", headers=api.auth())
        assert got.json()["data"]["status"] == "cancelled"

    await drain(api.pool, order_state.PROJECTION)
    listed = await api.client.get("/api/v3/orders", params={"status": "cancelled"}, headers=api.auth())
    assert listed.status_code == 200, listed.text
    assert {o["id"] for o in listed.json()["data"]} == set(ids[:2])

"""The whole life of an order through HTTP, with derived statuses and Transactions at each step."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from tests.integration.api.conftest import Api

SEED_CREATE = b"""{
"profile_id": "9332c9b2-e31c-4d49-8ec3-62a9466d339c",
"external_id": "CART-88123",
"total": 199.95,
"status": "pending",
"items": [
{
"name": "Trench Coat",
"product_variant_id": 441200,
"quantity": 1,
"price_current": 199.95,
"price_sell": 199.95,
"price_original": 199.95
}
]
}"""


def body(response: httpx.Response) -> Any:
    import json

    return json.loads(response.content, parse_float=Decimal)


async def test_the_seeds_omneo_examples_work_as_written(api: Api) -> None:
    created = await api.client.post(
        "/api/v3/orders", content=SEED_CREATE, headers=api.auth(**{"Content-Type": "application/json"})
    )
    assert created.status_code == 201, created.text
    order = body(created)["data"]
    assert order["total"] == Decimal("199.95")
    assert b'"total":199.95' in created.content
    assert created.headers["etag"] == '"1"'

    updated = await api.client.put(
        f"/api/v3/orders/{order['id']}",
        content=b'{"status": "processing", "total": 249.90}',
        headers=api.auth(**{"Content-Type": "application/json"}),
    )
    assert updated.status_code == 200, updated.text
    assert body(updated)["data"]["status"] == "processing"
    assert body(updated)["data"]["total"] == Decimal("249.90")

    got = await api.client.get(f"/api/v3/orders/{order['id']}", headers=api.auth())
    assert got.status_code == 200
    assert body(got)["data"]["total"] == Decimal("249.90")
    assert got.headers["etag"] == f'"{body(got)["data"]["version"]}"'


class Orders:
    """Tiny client helper: JSON in with exact decimals, JSON out parsed with Decimal."""

    def __init__(self, api: Api) -> None:
        self.api = api

    async def send(self, method: str, path: str, payload: Any = None, **headers: str) -> httpx.Response:
        import json

        content = None if payload is None else json.dumps(payload, default=str).encode()
        hdrs = self.api.auth(**{"Content-Type": "application/json", **headers})
        return await self.api.client.request(method, f"/api/v3{path}", content=content, headers=hdrs)

    async def ok(self, method: str, path: str, payload: Any = None, status: int = 200, **headers: str) -> Any:
        response = await self.send(method, path, payload, **headers)
        assert response.status_code == status, response.text
        return body(response)["data"]


def two_line_order() -> dict[str, Any]:
    return {
        "external_id": "CART-1",
        "currency": "USD",
        "total": Decimal("110.00"),
        "shipping": Decimal("10.00"),
        "items": [
            {"line_id": "A", "name": "Coat", "quantity": 2, "price_sell": Decimal("30.00"), "sku": "COAT"},
            {"line_id": "B", "name": "Hat", "quantity": 1, "price_sell": Decimal("40.00"), "sku": "HAT"},
        ],
    }


async def test_an_order_goes_from_placed_to_delivered_with_transactions_at_every_step(api: Api) -> None:
    o = Orders(api)
    order = await o.ok("POST", "/orders", two_line_order(), status=201)
    oid = order["id"]
    assert (order["payment_status"], order["fulfillment_status"]) == ("awaitingPayment", "unfulfilled")
    assert order["total"] == Decimal("110.00")
    assert order["transactions"] == []

    changed = await o.ok(
        "PUT",
        f"/orders/{oid}",
        {
            "items": [
                {
                    "line_id": "A",
                    "name": "Coat",
                    "quantity": 2,
                    "price_sell": Decimal("30.00"),
                    "sku": "COAT",
                },
                {"line_id": "B", "name": "Hat", "quantity": 2, "price_sell": Decimal("20.00"), "sku": "HAT"},
            ]
        },
    )
    assert [i["quantity"] for i in changed["items"]] == [2, 2]
    assert changed["total"] == Decimal("110.00")

    authorized = await o.ok(
        "POST", f"/orders/{oid}/payments", {"kind": "authorized", "amount": 110}, status=201
    )
    assert authorized["payment_status"] == "awaitingPayment"
    captured = await o.ok(
        "POST", f"/orders/{oid}/payments", {"kind": "captured", "amount": Decimal("110.00")}, status=201
    )
    assert captured["payment_status"] == "paid"
    assert captured["transactions"] == []

    part = await o.ok(
        "POST",
        f"/orders/{oid}/shipments",
        {"shipment_id": "S1", "lines": [{"line_id": "A", "quantity": 2}], "carrier": "DHL"},
        status=201,
    )
    assert part["fulfillment_status"] == "inProgress"
    assert [t["shipment_id"] for t in part["transactions"]] == ["S1"]
    assert part["transactions"][0]["lines_total"] == Decimal("60.00")

    rest = await o.ok(
        "POST", f"/orders/{oid}/shipments", {"lines": [{"sku": "HAT", "quantity": 2}]}, status=201
    )
    assert rest["fulfillment_status"] == "fulfilled"
    assert len(rest["transactions"]) == 2
    assert sum(t["total"] for t in rest["transactions"]) == Decimal("110.00")

    delivered = await o.ok("POST", f"/orders/{oid}/shipments/S1/delivered")
    delivered = await o.ok("POST", f"/orders/{oid}/shipments/{rest['shipments'][1]['shipment_id']}/delivered")
    assert delivered["fulfillment_status"] == "delivered"

    txs = await o.ok("GET", f"/orders/{oid}/transactions")
    assert txs == delivered["transactions"]
    history = await o.ok("GET", f"/orders/{oid}/events")
    assert [e["version"] for e in history] == list(range(1, delivered["version"] + 1))
    assert {e["metadata"]["actor"] for e in history} == {"checkout"}
    assert all(e["metadata"]["source"] == "http" for e in history)


async def test_a_canceled_order_can_still_be_refunded_and_a_full_refund_voids_transactions(api: Api) -> None:
    o = Orders(api)
    oid = (await o.ok("POST", "/orders", two_line_order(), status=201))["id"]
    await o.ok("POST", f"/orders/{oid}/payments", {"kind": "captured", "amount": 110}, status=201)
    shipped = await o.ok(
        "POST", f"/orders/{oid}/shipments", {"lines": [{"line_id": "A", "quantity": 1}]}, status=201
    )
    assert len(shipped["transactions"]) == 1
    assert not shipped["transactions"][0]["voided"]

    canceled = await o.ok("POST", f"/orders/{oid}/cancel", {"reason": "customer changed mind"})
    assert canceled["canceled_at"] is not None
    assert canceled["cancel_reason"] == "customer changed mind"
    refused = await o.send("POST", f"/orders/{oid}/shipments", {"lines": [{"line_id": "B", "quantity": 1}]})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"

    partial = await o.ok("POST", f"/orders/{oid}/payments", {"kind": "refunded", "amount": 10}, status=201)
    assert partial["payment_status"] == "partiallyRefunded"
    full = await o.ok("POST", f"/orders/{oid}/payments", {"kind": "refunded", "amount": 100}, status=201)
    assert full["payment_status"] == "refunded"
    assert all(t["voided"] for t in full["transactions"])
    too_much = await o.send("POST", f"/orders/{oid}/payments", {"kind": "refunded", "amount": 1})
    assert too_much.status_code == 422


async def test_a_deleted_order_is_gone_but_its_history_stays(api: Api) -> None:
    o = Orders(api)
    oid = (await o.ok("POST", "/orders", two_line_order(), status=201))["id"]
    deleted = await o.send("DELETE", f"/orders/{oid}")
    assert deleted.status_code == 200, deleted.text
    gone = await o.send("GET", f"/orders/{oid}")
    assert gone.status_code == 410
    assert body(gone)["type"] == "urn:order-ledger:problem:gone"
    again = await o.send("PUT", f"/orders/{oid}", {"status": "x"})
    assert again.status_code == 410
    history = await o.ok("GET", f"/orders/{oid}/events")
    assert [e["type"] for e in history] == ["OrderPlaced", "OrderDeleted"]
    old = await o.ok("GET", f"/orders/{oid}?version=1")
    assert old["version"] == 1


async def test_a_second_order_with_the_same_external_id_points_at_the_first(api: Api) -> None:
    o = Orders(api)
    first = await o.ok("POST", "/orders", two_line_order(), status=201)
    second = await o.send("POST", "/orders", two_line_order())
    assert second.status_code == 409
    problem = body(second)
    assert problem["type"] == "urn:order-ledger:problem:duplicate-external-id"
    assert problem["existing_order_id"] == first["id"]
    assert second.headers["location"] == f"/api/v3/orders/{first['id']}"
    assert await api.event_count() == 1

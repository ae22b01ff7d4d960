"""Strict parsing at the edge: one answer per kind of bad input, whichever route gets it.

Money strings are ASCII decimals only; a body may not contradict its path; `limit` and `cursor`
are refused the same way (422) on every list route; two `Authorization` headers are refused;
405 names every method the path serves; the audit feed's `order_id` is a UUID (422 otherwise).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.api.conftest import Api

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

LISTS = ("/api/v3/orders", "/api/v3/transactions", "/api/v3/events")


def order(price: Any = 10) -> bytes:
    return json.dumps(
        {"currency": "AUD", "items": [{"name": "Cap", "quantity": 1, "price_sell": price}]}
    ).encode()


async def place(api: Api) -> str:
    placed = await api.client.post(
        "/api/v3/orders", content=order(), headers=api.auth(**{"Content-Type": "application/json"})
    )
    assert placed.status_code == 201, placed.text
    oid: str = placed.json()["data"]["id"]
    return oid


@pytest.mark.parametrize("amount", ["1_000", "١٠٠", "10 ", "1e99999"])
async def test_money_strings_must_be_ascii_decimals(api: Api, amount: str) -> None:
    headers = api.auth(**{"Content-Type": "application/json"})
    placed = await api.client.post("/api/v3/orders", content=order(amount), headers=headers)
    assert placed.status_code == 422, placed.text
    assert placed.json()["errors"][0]["loc"][:2] == ["body", "items"]
    oid = await place(api)
    paid = await api.client.post(
        f"/api/v3/orders/{oid}/payments", json={"kind": "captured", "amount": amount}, headers=headers
    )
    assert paid.status_code == 422, paid.text
    assert await api.event_count() == 1  # only the valid order


async def test_a_shipment_id_in_the_body_must_match_the_path(api: Api) -> None:
    headers = api.auth(**{"Content-Type": "application/json"})
    oid = await place(api)
    line = (await api.client.get(f"/api/v3/orders/{oid}", headers=api.auth())).json()["data"]["items"][0]
    shipped = await api.client.post(
        f"/api/v3/orders/{oid}/shipments",
        json={"shipment_id": "S1", "lines": [{"line_id": line["line_id"], "quantity": 1}]},
        headers=headers,
    )
    assert shipped.status_code == 201, shipped.text
    before = await api.event_count()

    other = await api.client.post(
        f"/api/v3/orders/{oid}/shipments/S1/delivered", json={"shipment_id": "S2"}, headers=headers
    )
    assert other.status_code == 422, other.text
    assert other.json()["errors"][0]["loc"] == ["body", "shipment_id"]
    assert await api.event_count() == before

    same = await api.client.post(
        f"/api/v3/orders/{oid}/shipments/S1/delivered", json={"shipment_id": "S1"}, headers=headers
    )
    assert same.status_code == 200, same.text


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    "query", ["limit=0", "limit=501", "limit=100000", "cursor=not-a-cursor", "cursor=%25%25%25"]
)
async def test_every_list_route_answers_a_bad_limit_or_cursor_with_422(
    api: Api, path: str, query: str
) -> None:
    response = await api.client.get(f"{path}?{query}", headers=api.auth())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:order-ledger:problem:validation-error"


async def test_the_largest_page_is_accepted_on_every_list_route(api: Api) -> None:
    for path in LISTS:
        response = await api.client.get(f"{path}?limit=500", headers=api.auth())
        assert response.status_code == 200, (path, response.text)


async def test_the_audit_feed_answers_an_order_id_that_is_not_a_uuid_with_422(api: Api) -> None:
    response = await api.client.get("/api/v3/events?order_id=nope", headers=api.auth())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_two_authorization_headers_are_refused_with_a_400_problem(api: Api) -> None:
    headers = [("Authorization", f"Bearer {api.tokens['all']}"), ("Authorization", "Bearer someone-else")]
    for method, path in (("GET", "/api/v3/orders"), ("POST", "/api/v3/orders")):
        response = await api.client.request(method, path, headers=headers, content=order())
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert await api.event_count() == 0


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v3/orders", {"GET", "HEAD", "POST"}),
        ("/api/v3/orders/00000000-0000-0000-0000-000000000001", {"GET", "HEAD", "PUT", "DELETE"}),
        ("/api/v3/orders/00000000-0000-0000-0000-000000000001/cancel", {"POST"}),
    ],
)
async def test_a_405_lists_every_method_the_path_serves_in_allow(
    api: Api, path: str, allowed: set[str]
) -> None:
    response = await api.client.request("PATCH", path, headers=api.auth())
    assert response.status_code == 405, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed

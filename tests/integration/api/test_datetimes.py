"""Times at the edge: RFC 3339 strings in the supported range only, 422 problem+json otherwise.

Every route with a date filter and every command with a producer time shares one type
(`ledger.domain.timestamps.Timestamp`): before it, an out-of-range filter reached asyncpg and
answered 500, and an integer `canceled_at` was stored as a Unix time.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from ledger.domain.timestamps import MAX_TIMESTAMP, MIN_TIMESTAMP
from projections import order_state, transactions
from tests.integration.api.conftest import Api
from tests.integration.projections.support import drain

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

PROBLEM = "application/problem+json"
END_OF_TIME = "9999-12-31T23:59:59-14:00"  # year 10000 in UTC
BEFORE_TIME = "0001-01-01T00:00:00+14:00"  # year 0 in UTC
OUT_OF_RANGE = [
    END_OF_TIME,
    BEFORE_TIME,
    "9999-12-31T23:59:59Z",  # Python holds it, but not one offset further east or west
    "0001-01-01T00:00:00Z",
]
NOT_RFC3339 = ["0", "2026-01-31", "2026-01-31T10:00:00", "2026-01-31 10:00:00Z", "2026-13-01T00:00:00Z"]


def _order(**fields: object) -> bytes:
    body = {"currency": "AUD", "email": "p@x.co", "items": [{"name": "x", "quantity": 1, "price_current": 1}]}
    return json.dumps({**body, **fields}).encode()


async def _place(api: Api, **fields: object) -> str:
    response = await api.client.post(
        "/api/v3/orders", content=_order(**fields), headers=api.auth(**{"Content-Type": "application/json"})
    )
    assert response.status_code == 201, response.text
    order_id: str = response.json()["data"]["id"]
    return order_id


def _assert_validation_problem(response, name: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, (name, response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["status"] == 422


@pytest.mark.parametrize("value", [*OUT_OF_RANGE, *NOT_RFC3339])
async def test_every_date_filter_answers_422_for_a_time_out_of_range_or_not_rfc3339(
    api: Api, value: str
) -> None:
    order_id = await _place(api)
    q = quote(value)
    for path in (
        f"/api/v3/orders/{order_id}?at={q}",
        f"/api/v3/orders?updated_since={q}",
        f"/api/v3/events?since={q}",
        f"/api/v3/events?until={q}",
        f"/api/v3/transactions?since={q}",
        f"/api/v3/transactions?until={q}",
    ):
        _assert_validation_problem(await api.client.get(path, headers=api.auth()), path)


async def test_date_filters_at_the_bounds_of_the_range_are_answered(api: Api) -> None:
    order_id = await _place(api)
    for bound in (MIN_TIMESTAMP.isoformat(), MAX_TIMESTAMP.isoformat(), "9999-12-30T23:59:59+14:00"):
        q = quote(bound)
        for path in (
            f"/api/v3/orders?updated_since={q}",
            f"/api/v3/events?since={q}",
            f"/api/v3/events?until={q}",
            f"/api/v3/transactions?since={q}",
            f"/api/v3/transactions?until={q}",
        ):
            response = await api.client.get(path, headers=api.auth())
            assert response.status_code == 200, (path, response.text)
    # Before the order existed: not found; after: the order.
    early = await api.client.get(
        f"/api/v3/orders/{order_id}?at={quote(MIN_TIMESTAMP.isoformat())}", headers=api.auth()
    )
    assert early.status_code == 404
    late = await api.client.get(
        f"/api/v3/orders/{order_id}?at={quote(MAX_TIMESTAMP.isoformat())}", headers=api.auth()
    )
    assert late.json()["data"]["id"] == order_id


@pytest.mark.parametrize("value", [*OUT_OF_RANGE, *NOT_RFC3339, 0, 1700000000, 1.5, True])
async def test_a_producer_time_out_of_range_or_not_an_rfc3339_string_is_refused(
    api: Api, value: object
) -> None:
    before = await api.event_count()
    placed = await api.client.post(
        "/api/v3/orders",
        content=_order(placed_at=value),
        headers=api.auth(**{"Content-Type": "application/json"}),
    )
    _assert_validation_problem(placed, "placed_at")
    assert placed.json()["errors"][0]["loc"][-1] == "placed_at"
    order_id = await _place(api)
    canceled = await api.client.post(
        f"/api/v3/orders/{order_id}/cancel",
        content=json.dumps({"canceled_at": value}).encode(),
        headers=api.auth(**{"Content-Type": "application/json"}),
    )
    _assert_validation_problem(canceled, "canceled_at")
    assert await api.event_count() == before + 1  # only the order placed for the cancel


async def test_a_producer_time_keeps_its_offset(api: Api) -> None:
    order_id = await _place(api, placed_at="2026-01-31T10:00:00.5+10:00")
    response = await api.client.get(f"/api/v3/orders/{order_id}", headers=api.auth())
    assert response.json()["data"]["created_at"].startswith("2026-01-31T10:00:00.5")


async def test_an_order_a_projection_quarantined_is_marked_stale_on_its_routes_and_in_lists(api: Api) -> None:
    fresh = await _place(api)
    order_id = await _place(api)
    for projection in (order_state.PROJECTION, transactions.PROJECTION):
        await drain(api.pool, projection)
    ok = await api.client.get(f"/api/v3/orders/{fresh}", headers=api.auth())
    assert "Ledger-Stale-Read-Models" not in ok.headers
    await api.pool.execute(
        "INSERT INTO projection_quarantine (projection, version, stream_id, event_version, position, error)"
        " VALUES ($1, $2, $3, 1, 1, 'OverflowError: date value out of range')",
        order_state.PROJECTION.name,
        order_state.PROJECTION.version,
        f"order-{order_id}",
    )
    one = await api.client.get(f"/api/v3/orders/{order_id}", headers=api.auth())
    assert one.status_code == 200
    assert one.headers["Ledger-Stale-Read-Models"] == "order_state"
    txs = await api.client.get(f"/api/v3/orders/{order_id}/transactions", headers=api.auth())
    assert txs.headers["Ledger-Stale-Read-Models"] == "order_state"
    listed = await api.client.get("/api/v3/orders?limit=100", headers=api.auth())
    assert {o["id"] for o in listed.json()["data"]} == {fresh, order_id}
    assert listed.headers["Ledger-Stale-Orders"] == order_id
    assert (
        "Ledger-Stale-Read-Models"
        not in (await api.client.get(f"/api/v3/orders/{fresh}", headers=api.auth())).headers
    )

"""The HTTP contract of the order routes, on the in-memory store (no database needed).

Each test keeps one promise of the API: statuses and headers of commands, idempotency keys,
If-Match, problem+json for every refusal, body limits, history and audit reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest_asyncio

from ledger.api.problems import PROBLEM_MEDIA_TYPE
from tests.unit.api.inmemory import MemoryApi, body, memory_api, order_body


@pytest_asyncio.fixture(loop_scope="session")
async def api() -> AsyncIterator[MemoryApi]:
    async with memory_api(max_body_bytes=4096) as app:
        yield app


async def place(api: MemoryApi, **headers: str) -> str:
    created = await api.client.post("/api/v3/orders", content=order_body(), headers=api.auth(**headers))
    assert created.status_code == 201, created.text
    order_id: str = body(created)["data"]["id"]
    return order_id


async def test_placing_an_order_answers_201_with_etag_location_and_exact_money(api: MemoryApi) -> None:
    created = await api.client.post("/api/v3/orders", content=order_body(), headers=api.auth())
    assert created.status_code == 201, created.text
    order = body(created)["data"]
    assert order["total"] == Decimal("199.95")
    assert b'"total":199.95' in created.content
    assert created.headers["etag"] == '"1"'
    assert created.headers["location"] == f"/api/v3/orders/{order['id']}"
    got = await api.client.get(f"/api/v3/orders/{order['id']}", headers=api.auth())
    assert got.status_code == 200
    assert (body(got)["data"]["id"], body(got)["data"]["total"]) == (order["id"], Decimal("199.95"))


async def test_an_update_without_if_match_applies_and_bumps_the_version(api: MemoryApi) -> None:
    order_id = await place(api)
    updated = await api.client.put(
        f"/api/v3/orders/{order_id}", content=b'{"status": "processing"}', headers=api.auth()
    )
    assert updated.status_code == 200, updated.text
    assert (body(updated)["data"]["status"], updated.headers["etag"]) == ("processing", '"2"')
    first = await api.client.get(f"/api/v3/orders/{order_id}?version=1", headers=api.auth())
    assert body(first)["data"]["status"] == "pending"


async def test_an_update_that_changes_nothing_answers_200_with_the_same_version_and_no_replay_header(
    api: MemoryApi,
) -> None:
    order_id = await place(api)
    got = await api.client.get(f"/api/v3/orders/{order_id}", headers=api.auth())
    same = await api.client.put(f"/api/v3/orders/{order_id}", content=b'{"status": "pending"}', headers=api.auth())
    assert same.status_code == 200, same.text
    assert (same.headers["etag"], same.headers["location"]) == ('"1"', f"/api/v3/orders/{order_id}")
    assert "idempotent-replayed" not in same.headers
    assert same.content == got.content
    assert await api.store.stream_version(f"order-{order_id}") == 1


async def test_a_keyed_update_replays_200_with_the_first_answers_bytes_and_version(api: MemoryApi) -> None:
    order_id = await place(api)
    headers = api.auth(**{"Idempotency-Key": "update-key-0001"})
    url = f"/api/v3/orders/{order_id}"
    first = await api.client.put(url, content=b'{"status": "processing"}', headers=headers)
    later = await api.client.put(url, content=b'{"status": "completed"}', headers=api.auth())
    assert later.headers["etag"] == '"3"', later.text
    again = await api.client.put(url, content=b'{"status": "processing"}', headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert (again.content, again.headers["etag"]) == (first.content, '"2"')
    assert again.headers["idempotent-replayed"] == "true"


async def test_a_stale_if_match_is_a_409_problem_naming_the_current_version(api: MemoryApi) -> None:
    order_id = await place(api)
    stale = await api.client.put(
        f"/api/v3/orders/{order_id}",
        content=b'{"status": "processing"}',
        headers=api.auth(**{"If-Match": '"7"'}),
    )
    assert stale.status_code == 409
    assert stale.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert stale.headers["etag"] == '"1"'
    assert body(stale)["current_version"] == 1
    assert await api.store.stream_version(f"order-{order_id}") == 1


async def test_a_retry_with_the_same_idempotency_key_replays_the_same_bytes(api: MemoryApi) -> None:
    headers = {"Idempotency-Key": "retry-key-0001"}
    first = await api.client.post("/api/v3/orders", content=order_body(), headers=api.auth(**headers))
    again = await api.client.post("/api/v3/orders", content=order_body(), headers=api.auth(**headers))
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await api.store.stream_version(f"order-{body(first)['data']['id']}") == 1


async def test_an_idempotency_key_reused_for_another_body_is_a_422_problem(api: MemoryApi) -> None:
    headers = {"Idempotency-Key": "reused-key-0001"}
    await api.client.post("/api/v3/orders", content=order_body(), headers=api.auth(**headers))
    other = await api.client.post(
        "/api/v3/orders", content=order_body(total="5.00"), headers=api.auth(**headers)
    )
    assert other.status_code == 422
    assert other.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert body(other)["type"].endswith("idempotency-key-reused")


async def test_a_key_of_another_client_is_its_own_key(api: MemoryApi) -> None:
    headers = {"Idempotency-Key": "shared-key-0001"}
    mine = await api.client.post("/api/v3/orders", content=order_body(), headers=api.auth(**headers))
    theirs = await api.client.post(
        "/api/v3/orders", content=order_body(), headers=api.auth("lgr_other-client", **headers)
    )
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert body(mine)["data"]["id"] != body(theirs)["data"]["id"]


async def test_a_second_order_with_the_same_external_id_is_a_409_pointing_at_the_first(
    api: MemoryApi,
) -> None:
    first = await api.client.post("/api/v3/orders", content=order_body("CART-1"), headers=api.auth())
    second = await api.client.post("/api/v3/orders", content=order_body("CART-1"), headers=api.auth())
    assert second.status_code == 409
    problem = body(second)
    assert problem["type"].endswith("duplicate-external-id")
    assert problem["existing_order_id"] == body(first)["data"]["id"]
    assert second.headers["location"] == f"/api/v3/orders/{body(first)['data']['id']}"


async def test_missing_unknown_and_underscoped_tokens_are_401_401_403(api: MemoryApi) -> None:
    missing = await api.client.post("/api/v3/orders", content=order_body())
    unknown = await api.client.post("/api/v3/orders", content=order_body(), headers=api.auth("lgr_nobody"))
    reader = await api.client.post(
        "/api/v3/orders", content=order_body(), headers=api.auth("lgr_reader-only")
    )
    assert [r.status_code for r in (missing, unknown, reader)] == [401, 401, 403]
    assert all(r.headers["content-type"] == PROBLEM_MEDIA_TYPE for r in (missing, unknown, reader))
    assert await api.store.read_events() == []


async def test_a_body_over_the_limit_is_a_413_problem(api: MemoryApi) -> None:
    huge = await api.client.post("/api/v3/orders", content=b" " * 5000 + order_body(), headers=api.auth())
    assert huge.status_code == 413
    assert body(huge)["max_bytes"] == 4096


async def test_malformed_and_invalid_bodies_are_problems_not_500s(api: MemoryApi) -> None:
    broken = await api.client.post("/api/v3/orders", content=b'{"total": ', headers=api.auth())
    invalid = await api.client.post("/api/v3/orders", content=b'{"total": "lots"}', headers=api.auth())
    assert broken.status_code in (400, 422)
    assert invalid.status_code == 422
    assert all(r.headers["content-type"] == PROBLEM_MEDIA_TYPE for r in (broken, invalid))


async def test_a_deleted_order_is_gone_but_its_history_stays(api: MemoryApi) -> None:
    order_id = await place(api)
    deleted = await api.client.delete(f"/api/v3/orders/{order_id}", headers=api.auth())
    assert deleted.status_code == 200, deleted.text
    gone = await api.client.get(f"/api/v3/orders/{order_id}", headers=api.auth())
    assert gone.status_code == 410
    history = await api.client.get(f"/api/v3/orders/{order_id}/events", headers=api.auth())
    assert [e["type"] for e in body(history)["data"]] == ["OrderPlaced", "OrderDeleted"]


async def test_an_unknown_order_is_a_404_problem(api: MemoryApi) -> None:
    missing = await api.client.get("/api/v3/orders/00000000-0000-4000-8000-000000000000", headers=api.auth())
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM_MEDIA_TYPE


async def test_the_audit_feed_lists_an_orders_events_by_actor(api: MemoryApi) -> None:
    order_id = await place(api)
    feed = await api.client.get(f"/api/v3/events?order_id={order_id}&actor=checkout", headers=api.auth())
    assert feed.status_code == 200, feed.text
    assert [e["type"] for e in body(feed)["data"]] == ["OrderPlaced"]

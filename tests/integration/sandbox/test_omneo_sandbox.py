"""The Omneo sandbox over real HTTP: bearer auth, orders, idempotent transactions, 422s, limits."""

from __future__ import annotations

import httpx

from consumers.http import AuthFailure, Permanent, Retryable, Success
from consumers.omneo.client import OmneoClient
from tests.integration.sandbox.conftest import OMNEO_TOKEN, Running, omneo_order, omneo_transaction


async def test_missing_or_wrong_token_gets_omneos_401(omneo_box: Running) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": OMNEO_TOKEN}):
        reply = await omneo_box.control.get("/api/v3/orders", headers=headers)
        assert reply.status_code == 401
        assert reply.json() == {"message": "Unauthenticated."}


async def test_client_reports_a_revoked_token_as_auth_failure(omneo_box: Running) -> None:
    async with httpx.AsyncClient(base_url=omneo_box.url, headers={"Authorization": "Bearer revoked"}) as http:
        outcome = await OmneoClient(http).create_order(omneo_order())
    assert outcome == AuthFailure(status=401, body={"message": "Unauthenticated."})


async def test_create_order_returns_a_numeric_id_wrapped_in_data(
    omneo: OmneoClient, omneo_box: Running
) -> None:
    first = await omneo.create_order(omneo_order("L-1"))
    second = await omneo.create_order(omneo_order("L-2"))
    assert isinstance(first, Success)
    assert isinstance(second, Success)
    assert first.status == 201
    assert (first.remote_id, second.remote_id) == ("1001", "1002")
    assert first.body["data"]["external_id"] == "L-1"
    assert first.body["data"]["transactions"] == []
    assert set((await omneo_box.state())["orders"]) == {"1001", "1002"}


async def test_put_is_a_partial_merge(omneo: OmneoClient) -> None:
    created = await omneo.create_order(omneo_order())
    assert isinstance(created, Success)
    updated = await omneo.update_order(created.remote_id or "", {"status": "processing", "total": 249.90})
    assert isinstance(updated, Success)
    data = updated.body["data"]
    assert (data["status"], data["total"], data["external_id"]) == ("processing", 249.90, "L-1")
    assert len(data["items"]) == 1


async def test_get_delete_and_lookup_by_external_id(omneo: OmneoClient) -> None:
    created = await omneo.create_order(omneo_order("L-7"))
    assert isinstance(created, Success)
    oid = created.remote_id or ""
    found = await omneo.find_order("L-7")
    assert isinstance(found, Success)
    assert found.remote_id == oid
    found_none = await omneo.find_order("nope")
    assert isinstance(found_none, Success)
    assert found_none.remote_id == ""
    assert isinstance(await omneo.get_order(oid), Success)
    assert await omneo.delete_order(oid) == Success(204)
    missing = await omneo.get_order(oid)
    assert isinstance(missing, Permanent)
    assert missing.reason == "not_found"


async def test_invalid_order_gets_laravel_422(omneo: OmneoClient) -> None:
    outcome = await omneo.create_order(
        {"external_id": 5, "total": "lots", "is_void": None, "items": [{"name": "x"}]}
    )
    assert isinstance(outcome, Permanent)
    assert (outcome.status, outcome.reason) == (422, "validation")
    assert outcome.body == {
        "message": "The given data was invalid.",
        "errors": {
            "status": ["The status field is required."],
            "external_id": ["The external id must be a string."],
            "total": ["The total must be a number."],
            "is_void": ["The is void field must be true or false."],
            "items.0.quantity": ["The items.0.quantity field is required."],
            "items.0.price_current": ["The items.0.price current field is required."],
            "items.0.price_sell": ["The items.0.price sell field is required."],
        },
    }


async def test_update_create_is_idempotent_by_external_id(omneo: OmneoClient, omneo_box: Running) -> None:
    order = await omneo.create_order(omneo_order())
    assert isinstance(order, Success)
    oid = int(order.remote_id or 0)
    first = await omneo.upsert_transaction(omneo_transaction(oid))
    again = await omneo.upsert_transaction(omneo_transaction(oid))
    assert isinstance(first, Success)
    assert isinstance(again, Success)
    assert (first.status, again.status) == (201, 200)
    assert first.remote_id == again.remote_id
    state = await omneo_box.state()
    assert len(state["transactions"]) == 1
    assert [t["external_id"] for t in state["orders"][str(oid)]["transactions"]] == ["L-1:S1"]


async def test_void_marks_the_transaction_instead_of_deleting_it(
    omneo: OmneoClient, omneo_box: Running
) -> None:
    order = await omneo.create_order(omneo_order())
    assert isinstance(order, Success)
    tx = omneo_transaction(int(order.remote_id or 0))
    await omneo.upsert_transaction(tx)
    voided = await omneo.void_transaction(tx)
    assert isinstance(voided, Success)
    assert voided.body["data"]["is_void"] is True
    fetched = await omneo.get_transaction_by_external_id("L-1:S1")
    assert isinstance(fetched, Success)
    assert fetched.body["data"]["is_void"] is True
    assert len((await omneo_box.state())["transactions"]) == 1


async def test_transactions_need_wall_clock_time_and_an_existing_order(omneo: OmneoClient) -> None:
    outcome = await omneo.upsert_transaction(omneo_transaction(999, transacted_at="2025-06-15T14:32:00Z"))
    assert isinstance(outcome, Permanent)
    assert outcome.body["errors"] == {
        "transacted_at": ["The transacted at does not match the format Y-m-d H:i:s."]
    }
    unknown_order = await omneo.upsert_transaction(omneo_transaction(999))
    assert isinstance(unknown_order, Permanent)
    assert unknown_order.body["errors"] == {"order_id": ["The selected order id is invalid."]}


async def test_rate_limit_answers_429_with_retry_after_until_the_window_moves(
    omneo: OmneoClient, omneo_box: Running
) -> None:
    for _ in range(50):
        reply = await omneo_box.http.get("/api/v3/orders")
        assert reply.status_code == 200
    assert reply.headers["X-RateLimit-Remaining"] == "0"
    limited = await omneo_box.http.get("/api/v3/orders")
    assert limited.status_code == 429
    assert limited.json() == {"message": "Too Many Attempts."}
    assert limited.headers["Retry-After"] == "60"
    outcome = await omneo.create_order(omneo_order())
    assert isinstance(outcome, Retryable)
    assert (outcome.status, outcome.retry_after) == (429, 60.0)
    omneo_box.clock.advance(60)
    assert isinstance(await omneo.create_order(omneo_order()), Success)


async def test_request_log_redacts_the_bearer_token(omneo: OmneoClient, omneo_box: Running) -> None:
    await omneo.create_order(omneo_order())
    rows = await omneo_box.requests()
    assert rows[0]["headers"]["authorization"] == "[REDACTED]"
    assert rows[0]["body"]["external_id"] == "L-1"
    assert rows[0]["status"] == 201
    assert OMNEO_TOKEN not in (await omneo_box.control.get("/_sandbox/requests")).text

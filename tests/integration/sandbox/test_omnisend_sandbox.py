"""The Omnisend sandbox over real HTTP: auth, validation, v3 order semantics, events, 400/min."""

from __future__ import annotations

import httpx
import pytest

from consumers.http import AuthFailure, Permanent, Retryable, Success
from consumers.omnisend.client import OmnisendClient
from tests.integration.sandbox.conftest import OMNISEND_KEY, Running, v3_order


async def test_wrong_or_missing_api_key_gets_401_in_the_vendor_shape(omnisend_box: Running) -> None:
    for headers in ({}, {"X-API-KEY": "nope"}):
        reply = await omnisend_box.control.post("/v3/orders", json=v3_order(), headers=headers)
        assert reply.status_code == 401
        assert reply.json() == {
            "error": "Unauthorized - authorization error (invalid basic auth data or API key)"
        }
    assert (await omnisend_box.state())["orders"] == {}


async def test_client_reports_a_rejected_key_as_auth_failure(omnisend_box: Running) -> None:
    async with httpx.AsyncClient(base_url=omnisend_box.url, headers={"X-API-KEY": "old"}) as http:
        assert await OmnisendClient(http).create_order(v3_order()) == AuthFailure(
            status=401,
            body={"error": "Unauthorized - authorization error (invalid basic auth data or API key)"},
        )


async def test_create_stores_the_order_keyed_by_order_id(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    outcome = await omnisend.create_order(v3_order("ord-9"))
    assert outcome == Success(200, {"orderID": "ord-9", "email": "ann@example.com"}, remote_id="ord-9")
    stored = (await omnisend_box.state())["orders"]["ord-9"]
    assert stored["orderSum"] == 19995
    assert stored["billingAddress"]["countryCode"] == "USA"


async def test_create_is_create_only_and_a_duplicate_is_already_exists(omnisend: OmnisendClient) -> None:
    assert isinstance(await omnisend.create_order(v3_order()), Success)
    duplicate = await omnisend.create_order(v3_order(orderSum=1))
    assert isinstance(duplicate, Permanent)
    assert (duplicate.status, duplicate.reason) == (409, "already_exists")
    assert duplicate.body == {"error": "Order with orderID ord-1 already exists"}


@pytest.mark.usefixtures("omnisend_seed_rules")
async def test_missing_mandatory_fields_get_422_and_bad_values_400(omnisend: OmnisendClient) -> None:
    missing = await omnisend.create_order({"orderID": "x", "products": []})
    assert isinstance(missing, Permanent)
    assert missing.status == 422
    assert missing.body["error"].startswith("Unprocessable Entity")
    for field in ("currency", "orderSum", "createdAt", "email, phone or contactID"):
        assert field in missing.body["error"]
    bad = await omnisend.create_order(v3_order(orderSum=199.95, paymentStatus="PAID"))
    assert isinstance(bad, Permanent)
    assert (bad.status, bad.reason) == (400, "bad_request")
    assert "orderSum: must be of type integer" in bad.body["error"]
    assert "paymentStatus: must be one of" in bad.body["error"]


@pytest.mark.usefixtures("omnisend_seed_rules")
async def test_500_products_pass_and_501_are_refused(omnisend: OmnisendClient) -> None:
    assert isinstance(await omnisend.create_order(v3_order("big", products=500)), Success)
    refused = await omnisend.create_order(v3_order("bigger", products=501))
    assert isinstance(refused, Permanent)
    assert "at most 500 products" in refused.body["error"]


async def test_put_replaces_the_whole_order(omnisend: OmnisendClient, omnisend_box: Running) -> None:
    await omnisend.create_order(v3_order(trackingCode="1Z", cancelReason="x"))
    replacement = v3_order(orderSum=5000, paymentStatus="paid")
    outcome = await omnisend.replace_order("ord-1", replacement)
    assert isinstance(outcome, Success)
    stored = (await omnisend_box.state())["orders"]["ord-1"]
    assert (stored["orderSum"], stored["paymentStatus"]) == (5000, "paid")
    assert "trackingCode" not in stored
    assert "cancelReason" not in stored


async def test_put_with_a_different_order_id_in_the_body_is_refused(omnisend_box: Running) -> None:
    reply = await omnisend_box.http.put("/v3/orders/ord-1", json=v3_order("ord-2"))
    assert reply.status_code == 400
    assert "must match the orderID in the path" in reply.json()["error"]


async def test_patch_changes_status_and_tracking_only(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    await omnisend.create_order(v3_order())
    changes = {
        "fulfillmentStatus": "inProgress",
        "trackingCode": "1Z9",
        "courierUrl": "https://ups.example/1Z9",
    }
    assert isinstance(await omnisend.patch_order("ord-1", changes), Success)
    stored = (await omnisend_box.state())["orders"]["ord-1"]
    assert stored["fulfillmentStatus"] == "inProgress"
    assert stored["orderSum"] == 19995
    extra = await omnisend_box.http.patch("/v3/orders/ord-1", json={"orderSum": 1, "paymentStatus": "paid"})
    assert extra.status_code == 200, "the spec does not forbid other fields: they are ignored"
    stored = (await omnisend_box.state())["orders"]["ord-1"]
    assert (stored["orderSum"], stored["paymentStatus"]) == (19995, "paid")


@pytest.mark.usefixtures("omnisend_seed_rules")
async def test_patch_bad_enum_and_unknown_order(omnisend: OmnisendClient) -> None:
    await omnisend.create_order(v3_order())
    bad = await omnisend.patch_order("ord-1", {"paymentStatus": "settled"})
    assert isinstance(bad, Permanent)
    assert bad.status == 400
    missing = await omnisend.patch_order("nope", {"paymentStatus": "paid"})
    assert isinstance(missing, Permanent)
    assert missing.reason == "not_found"


async def test_get_and_delete_answer_as_the_vendor(omnisend: OmnisendClient) -> None:
    await omnisend.create_order(v3_order())
    got = await omnisend.get_order("ord-1")
    assert isinstance(got, Success)
    assert got.body["orderSum"] == 19995
    assert await omnisend.delete_order("ord-1") == Success(204)
    gone = await omnisend.delete_order("ord-1")
    assert isinstance(gone, Permanent)
    assert gone.reason == "not_found"


async def test_events_are_accepted_with_202_and_kept(
    omnisend_events: OmnisendClient, omnisend_box: Running
) -> None:
    omnisend = omnisend_events
    event = {
        "eventName": "placed order",
        "origin": "api",
        "eventVersion": "v2",
        "eventID": "6f1c2f0e-1d2b-5c3a-9e4f-0a1b2c3d4e5f",
        "eventTime": "2025-06-15T14:32:00Z",
        "contact": {"email": "ann@example.com"},
        "properties": {
            "orderID": "ord-1",
            "currency": "USD",
            "totalPrice": 199.95,
            "paymentStatus": "awaitingPayment",
            "fulfillmentStatus": "unfulfilled",
            "lineItems": [
                {
                    "productID": "p1",
                    "productVariantID": "v1",
                    "productTitle": "Trench",
                    "productPrice": 199.95,
                    "productQuantity": 1,
                }
            ],
        },
    }
    assert await omnisend.send_event(event) == Success(202, {})
    assert (await omnisend_box.state())["events"][0]["properties"]["orderID"] == "ord-1"


async def test_bad_events_get_an_rfc9457_problem_naming_every_field(omnisend_events: OmnisendClient) -> None:
    omnisend = omnisend_events
    event = {
        "eventName": "order refunded",
        "eventVersion": "v2",
        "contact": {},
        "properties": {"currency": "usd"},
    }
    outcome = await omnisend.send_event(event)
    assert isinstance(outcome, Permanent)
    assert outcome.status == 400
    assert (outcome.body["status"], outcome.body["title"]) == (400, "Validation failed")
    assert {"type", "detail", "instance"} <= set(outcome.body)
    fields = {f["field"] for f in outcome.body["errors"]}
    assert fields == {
        "origin",
        "contact.email",
        "properties.orderID",
        "properties.currency",
        "properties.totalPrice",
        "properties.refundedLineItems",
    }


async def test_every_response_carries_the_rate_limit_headers(omnisend_box: Running) -> None:
    reply = await omnisend_box.http.get("/v3/orders/none")
    assert reply.status_code == 404
    assert reply.headers["X-Rate-Limit-Limit"] == "400"
    assert reply.headers["X-Rate-Limit-Remaining"] == "399"
    assert reply.headers["X-Rate-Limit-Reset"] == "60"


async def test_the_401st_request_in_a_minute_gets_429_until_the_window_moves(
    omnisend_box: Running, omnisend: OmnisendClient
) -> None:
    box = omnisend_box
    for i in range(400):
        if i == 200:
            box.clock.advance(20)  # half the budget was used 20 s earlier
        assert (await box.http.get("/v3/orders/none")).status_code == 404
    box.clock.advance(10)
    limited = await box.http.get("/v3/orders/none")
    assert limited.status_code == 429
    assert limited.json()["error"].startswith("to many requests (rate limit)")
    assert limited.headers["X-Rate-Limit-Remaining"] == "0"
    assert limited.headers["X-Rate-Limit-Reset"] == "30"
    assert "Retry-After" not in limited.headers
    outcome = await omnisend.create_order(v3_order())
    assert isinstance(outcome, Retryable)
    assert (outcome.status, outcome.retry_after, outcome.ambiguous) == (429, 30.0, False)
    box.clock.advance(29.9)
    assert (await box.http.get("/v3/orders/none")).status_code == 429
    box.clock.advance(0.1)  # the first 200 leave the window
    assert (await box.http.get("/v3/orders/none")).status_code == 404
    assert (await box.state())["orders"] == {}


async def test_request_log_shows_what_was_received_without_the_key(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    await omnisend.create_order(v3_order())
    await omnisend.patch_order("ord-1", {"paymentStatus": "paid"})
    rows = await omnisend_box.requests()
    assert [(r["index"], r["method"], r["path"], r["status"]) for r in rows] == [
        (0, "POST", "/v3/orders", 200),
        (1, "PATCH", "/v3/orders/ord-1", 200),
    ]
    assert rows[0]["headers"]["x-api-key"] == "[REDACTED]"
    assert rows[1]["body"] == {"paymentStatus": "paid"}
    assert [r["index"] for r in await omnisend_box.requests(since=1)] == [1]
    raw = (await omnisend_box.control.get("/_sandbox/requests")).text
    assert OMNISEND_KEY not in raw


async def test_reset_forgets_orders_log_and_window(omnisend: OmnisendClient, omnisend_box: Running) -> None:
    await omnisend.create_order(v3_order())
    assert (await omnisend_box.control.post("/_sandbox/reset")).status_code == 200
    assert await omnisend_box.state() == {"orders": {}, "events": [], "categories": {}, "batches": {}}
    assert await omnisend_box.requests() == []


async def test_the_2026_events_api_refuses_a_call_without_its_version_header(omnisend_box: Running) -> None:
    headers = {"Authorization": f"Omnisend-API-Key {OMNISEND_KEY}"}
    reply = await omnisend_box.control.post("/api/events", json={"eventName": "x"}, headers=headers)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["errors"][0]["field"] == "Omnisend-Version"
    unauthorised = await omnisend_box.control.post(
        "/api/events",
        json={},
        headers={"Omnisend-Version": "2026-03-15", "Authorization": "Omnisend-API-Key x"},
    )
    assert unauthorised.status_code == 401

"""Fault injection end to end, and the clients' classification of every failure shape."""

from __future__ import annotations

import email.utils
import time

import httpx

from consumers.http import AuthFailure, Permanent, Retryable, Success
from consumers.omneo.client import OmneoClient
from consumers.omnisend.client import OmnisendClient
from tests.integration.sandbox.conftest import TIMEOUT_S, Running, omneo_order, v3_order


async def test_counted_5xx_then_recovery(omnisend: OmnisendClient, omnisend_box: Running) -> None:
    await omnisend_box.fault({"status": 503, "count": 2, "paths": "/v3/orders*"})
    outcomes = [await omnisend.create_order(v3_order()) for _ in range(3)]
    assert [type(o) for o in outcomes] == [Retryable, Retryable, Success]
    assert outcomes[0] == Retryable("http_503", status=503, body={"error": "Injected fault"})
    assert [r["fault"] for r in await omnisend_box.requests()] == ["status", "status", None]


async def test_timed_5xx_lasts_for_its_window_on_the_sandbox_clock(
    omneo: OmneoClient, omneo_box: Running
) -> None:
    await omneo_box.fault({"status": 500, "for_seconds": 30})
    failed = await omneo.create_order(omneo_order())
    assert isinstance(failed, Retryable)
    assert failed.ambiguous  # a 500 may have been applied: look the order up before re-POSTing
    assert failed.body == {"message": "Server Error"}
    omneo_box.clock.advance(30)
    assert isinstance(await omneo.create_order(omneo_order()), Success)


async def test_retry_after_seconds_and_http_date_are_parsed(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    await omnisend_box.fault({"status": 503, "count": 1, "retry_after": "7"})
    seconds = await omnisend.get_order("x")
    assert isinstance(seconds, Retryable)
    assert seconds.retry_after == 7.0
    await omnisend_box.fault(
        {"status": 503, "count": 1, "retry_after": email.utils.formatdate(time.time() + 120, usegmt=True)}
    )
    dated = await omnisend.get_order("x")
    assert isinstance(dated, Retryable)
    assert dated.retry_after is not None
    assert 110 <= dated.retry_after <= 121


async def test_rate_limit_storm_gives_429_with_the_reset_window(
    omnisend: OmnisendClient, omneo: OmneoClient, omnisend_box: Running, omneo_box: Running
) -> None:
    await omnisend_box.fault({"rate_limit_storm": {"count": 2, "reset_seconds": 12}})
    storm = await omnisend.create_order(v3_order())
    assert isinstance(storm, Retryable)
    assert (storm.status, storm.retry_after, storm.ambiguous) == (429, 12.0, False)
    assert storm.body["error"].startswith("to many requests (rate limit)")
    await omneo_box.fault({"rate_limit_storm": True, "count": 1, "reset_seconds": 5})
    omneo_storm = await omneo.create_order(omneo_order())
    assert isinstance(omneo_storm, Retryable)
    assert omneo_storm.retry_after == 5.0


async def test_hang_trips_the_client_deadline_as_an_ambiguous_timeout(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    await omnisend_box.fault({"hang_seconds": 30, "count": 1})
    started = time.monotonic()
    outcome = await omnisend.create_order(v3_order())
    assert time.monotonic() - started < TIMEOUT_S + 1
    assert outcome == Retryable("timeout", ambiguous=True)
    assert (await omnisend_box.control.delete("/_sandbox/faults")).status_code == 204


async def test_rejected_order_fails_permanently_while_others_flow(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    await omnisend_box.fault({"reject_order": "ord-bad", "status": 422})
    bad = await omnisend.create_order(v3_order("ord-bad"))
    assert isinstance(bad, Permanent)
    assert (bad.status, bad.reason) == (422, "validation")
    again = await omnisend.patch_order("ord-bad", {"paymentStatus": "paid"})
    assert isinstance(again, Permanent)
    assert isinstance(await omnisend.create_order(v3_order("ord-good")), Success)


async def test_garbage_2xx_is_a_failure_not_a_success(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    await omnisend_box.fault({"status": 200, "body": "<html>maintenance</html>", "count": 1})
    outcome = await omnisend.create_order(v3_order())
    assert isinstance(outcome, Retryable)
    assert (outcome.reason, outcome.ambiguous) == ("invalid_response", True)


async def test_huge_body_is_read_only_up_to_the_cap(omneo_box: Running) -> None:
    await omneo_box.fault({"status": 200, "body_bytes": 50 * 1024 * 1024, "count": 1})
    client = OmneoClient(omneo_box.http, deadline_s=5)
    started = time.monotonic()
    outcome = await client.get_order(1)
    assert time.monotonic() - started < 3
    assert isinstance(outcome, Retryable)
    assert outcome.reason == "response_too_large"


async def test_a_2xx_without_the_remote_id_is_not_a_success(omneo: OmneoClient, omneo_box: Running) -> None:
    await omneo_box.fault({"status": 201, "body": '{"data": {}}', "count": 1})
    outcome = await omneo.create_order(omneo_order())
    assert isinstance(outcome, Retryable)
    assert (outcome.reason, outcome.ambiguous) == ("missing_remote_id", True)


async def test_dropped_connection_is_an_ambiguous_transport_error(
    omneo: OmneoClient, omneo_box: Running
) -> None:
    await omneo_box.fault({"reset_connection": True, "count": 1})
    outcome = await omneo.create_order(omneo_order())
    assert isinstance(outcome, Retryable)
    assert outcome.reason.startswith("transport_error")
    assert outcome.ambiguous


async def test_refused_connection_is_retryable_and_not_ambiguous() -> None:
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as http:
        assert await OmnisendClient(http).create_order(v3_order()) == Retryable("connect_error")


async def test_omnisend_403_is_auth_failure_flagged_as_possible_throttle(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    await omnisend_box.fault({"status": 403, "count": 1})
    outcome = await omnisend.create_order(v3_order())
    assert isinstance(outcome, AuthFailure)
    assert outcome.possibly_throttled


async def test_faults_can_be_listed_cleared_and_bad_specs_refused(omneo_box: Running) -> None:
    control = omneo_box.control
    await omneo_box.fault({"status": 502, "paths": "/api/v3/transactions*"})
    assert [f["status"] for f in (await control.get("/_sandbox/faults")).json()["faults"]] == [502]
    assert (await control.post("/_sandbox/faults", json={"nothing": 1})).status_code == 400
    assert (await control.delete("/_sandbox/faults")).status_code == 204
    assert (await control.get("/_sandbox/faults")).json() == {"faults": []}


async def test_faults_from_config_are_active_at_start() -> None:
    from consumers.sandbox import OmneoConfig, create_omneo_app, run_in_background

    app = create_omneo_app(OmneoConfig(token="t", faults=[{"status": 503, "count": 1}]))
    url, stop = await run_in_background(app)
    try:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer t"}) as http:
            assert (await http.get("/api/v3/orders")).status_code == 503
            assert (await http.get("/api/v3/orders")).status_code == 200
    finally:
        await stop()

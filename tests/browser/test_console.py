"""An auditor and an operator use the console in a real headless Chromium (tests/browser/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from playwright.async_api import Page

from consumers.fanout.delivery_store import FanoutStore
from ledger.domain.views import order_to_json
from ledger.repository import ConnectionReader, fold_steps
from ledger.store import EventStore
from ledger_app.reconcile import ReconcileOptions, run_reconciliation
from ledger_kernel.wire.codec import dumps
from ledger_kernel.wire.envelope import build_envelope
from ledger_kernel.wire.streams import stream_id_of
from projections import order_state
from tests.browser.conftest import Console, screenshot
from tests.integration.projections.support import wait_fenced
from tests.integration.reconcile import test_reconcile as reconcile_support

pytestmark = [pytest.mark.browser, pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


def order_body(**extra: object) -> dict[str, object]:
    tag = uuid.uuid4().hex[:8]
    return {
        "external_id": f"WEB-{tag}",
        "currency": "AUD",
        "total": 60,
        "profile_id": f"profile-{tag}",
        "email": f"{tag}@example.com",
        "first_name": "Ada",
        "items": [
            {"line_id": "L1", "name": "Scarf", "quantity": 2, "price_sell": 20},
            {"line_id": "L2", "name": "Hat", "quantity": 1, "price_sell": 20},
        ],
        **extra,
    }


async def park_for_omneo(console: Console, order_id: str) -> None:
    """Park the order's first event for Omneo as a worker would after a 422 (its real envelope)."""
    async with console.pool.acquire() as conn:
        rows = await ConnectionReader(conn).read_stream(stream_id_of(order_id))
    row, state = next(iter(fold_steps(rows)))
    envelope = build_envelope(
        event_id=str(row.event_id),
        order_id=order_id,
        stream_id=row.stream_id,
        version=row.version,
        position=row.position,
        type_=row.type,
        schema_version=row.schema_version,
        data=row.data,
        metadata=row.metadata,
        recorded_at=row.recorded_at,
        order=json.loads(dumps(order_to_json(state))),
    )
    store = FanoutStore(console.pool, "omneo")
    async with store.order_lock(order_id) as conn:
        await store.park(
            conn,
            order_id,
            [(str(row.event_id), row.version, row.position, envelope)],
            "omneo.order.create rejected: HTTP 422 validation (test)",
        )


async def text(page: Page, selector: str) -> str:
    return (await page.inner_text(selector)).strip()


async def test_an_auditor_finds_an_order_reads_its_timeline_and_a_diff_and_views_an_earlier_version(
    console: Console,
) -> None:
    body = order_body()
    order_id = await console.place(body)
    await console.command(f"/api/v3/orders/{order_id}/payments", {"kind": "captured", "amount": 60})
    await console.command(
        f"/api/v3/orders/{order_id}/shipments", {"shipment_id": "S1", "lines": [{"line_id": "L1", "quantity": 2}]}
    )
    await console.read_model_caught_up()  # external and profile ids are found in the order_state read model
    page = await console.signed_in("readonly")
    await screenshot(page, "orders-search")

    # find by external id, then by profile id, then by order id
    for key in (body["external_id"], body["profile_id"], order_id):
        await page.goto(f"{console.url}/console/orders")
        await page.fill("#q", str(key))
        await page.click("#find")
        await page.wait_for_selector("#order-id")
        assert await text(page, "#order-id") == order_id

    assert await text(page, "#state-version") == "3"
    assert await page.locator("#timeline tr.event").count() == 3
    assert [await text(page, f"#event-{v} .type") for v in (1, 2, 3)] == [
        "OrderPlaced",
        "PaymentCaptured",
        "ShipmentDispatched",
    ]
    assert await text(page, "#event-1 .actor") == "checkout"
    assert await text(page, "#event-1 .source") == "http"
    payment_diff = await text(page, "#event-2 .diff")
    assert "payments.captured" in payment_diff
    assert "60" in payment_diff
    assert "payment_status" in payment_diff
    assert "shipments[S1]" in await text(page, "#event-3 .diff")
    assert await page.locator("#transactions td.mono").count() == 2  # one Transaction: id + shipment
    await screenshot(page, "order")

    await page.click("#event-1 .as-of-link")
    await page.wait_for_selector("#historical")
    assert await text(page, "#shown-version") == "1"
    assert await text(page, "#state-version") == "1"
    assert await page.locator("#payments tr").count() == 1, "no payment at version 1 (header row only)"
    await screenshot(page, "order-as-of-version-1")

    # as of a time: the moment the payment was recorded is version 2; now is the current state
    await page.goto(f"{console.url}/console/orders/{order_id}")
    paid_at = await text(page, "#event-2 .recorded-at")
    await page.fill("#as-of-time", paid_at)
    await page.click("#as-of-go")
    await page.wait_for_selector("#historical")
    assert await text(page, "#shown-version") == "2"
    assert await page.locator("#payments tr").count() == 2, "the captured payment, no shipment yet"
    assert await page.locator("#shipments tr").count() == 1
    await page.fill("#as-of-time", datetime.now(UTC).isoformat())
    await page.click("#as-of-go")
    await page.wait_for_selector("#state-version")
    assert await text(page, "#state-version") == "3"


async def test_the_audit_feed_filters_pages_and_downloads_json_lines_and_csv(console: Console) -> None:
    order_id = await console.place(order_body())
    await console.command(f"/api/v3/orders/{order_id}/payments", {"kind": "authorized", "amount": 60})
    await wait_fenced(console.pool)  # the feed reads the fenced log: a writer elsewhere in the cluster holds it
    page = await console.signed_in("readonly")
    await page.goto(f"{console.url}/console/audit?actor=checkout&type=PaymentAuthorized")
    rows = page.locator("#events tr.event")
    assert await rows.count() >= 1
    assert {await t.inner_text() for t in await page.locator("#events .type").all()} == {"PaymentAuthorized"}
    await screenshot(page, "audit")

    later = datetime.now(UTC).isoformat()
    await page.goto(f"{console.url}/console/audit?actor=checkout&since={quote(later)}")
    assert await page.locator("#events tr.event").count() == 0, "nothing recorded after now"
    await page.goto(f"{console.url}/console/audit?actor=checkout&until={quote(later)}&type=PaymentAuthorized")
    assert await page.locator("#events tr.event").count() >= 1

    await page.goto(f"{console.url}/console/audit?actor=checkout&limit=1")
    first = await text(page, "#events tr.event")
    await page.click("#next-page")
    await page.wait_for_selector("#events tr.event")
    assert await text(page, "#events tr.event") != first, "the next page starts after the first"

    await page.goto(f"{console.url}/console/audit?actor=checkout&type=PaymentAuthorized")
    async with page.expect_download() as jsonl_info:
        await page.click("#export-jsonl")
    jsonl = await (await jsonl_info.value).path()
    lines = [json.loads(line) for line in (await asyncio.to_thread(jsonl.read_text, "utf-8")).splitlines()]
    assert lines
    assert {line["type"] for line in lines} == {"PaymentAuthorized"}
    assert order_id in {line["order_id"] for line in lines}
    async with page.expect_download() as csv_info:
        await page.click("#export-csv")
    csv_path = await (await csv_info.value).path()
    csv_text = await asyncio.to_thread(csv_path.read_text, "utf-8")
    assert csv_text.splitlines()[0].startswith("recorded_at,position,order_id")
    assert order_id in csv_text


async def test_an_operator_redrives_a_parked_order_and_sees_it_delivered(console: Console) -> None:
    order_id = await console.place(order_body())
    await park_for_omneo(console, order_id)
    page = await console.signed_in("admin")
    await page.goto(f"{console.url}/console/ops")
    row = page.locator(f"#parked-omneo-{order_id}")
    assert "422" in await row.inner_text()
    charts = page.locator("#charts .card")
    names = [await c.inner_text() for c in await charts.all()]
    for name in ("relay lag", "projection order_state lag", "worker omneo backlog", "fence lag", "append rate"):
        assert any(name in n for n in names), names
    assert await page.locator("#charts svg.chart").count() == await charts.count()
    await screenshot(page, "ops-parked")
    await row.locator(".redrive-button").click()
    await page.wait_for_selector("#flash")
    assert "redriven" in await text(page, "#flash"), await text(page, "#flash")
    assert await page.locator(f"#parked-omneo-{order_id}").count() == 0
    await page.goto(f"{console.url}/console/orders/{order_id}")
    assert await text(page, "#delivery-omneo .delivered-version") == "1"
    assert await text(page, "#delivery-omneo .parked-reason") == ""
    received = [r for r in await console.omneo.requests() if r.get("method") == "POST"]
    assert received, "the sandbox received the order"
    await screenshot(page, "order-delivered")


async def test_an_operator_watches_a_rebuild_progress_until_the_new_version_is_live(console: Console) -> None:
    for _ in range(3):
        await console.place(order_body())
    page = await console.signed_in("admin")
    await page.goto(f"{console.url}/console/ops")
    await page.click("#rebuild-button-order_state")
    await page.wait_for_selector("#flash")
    await console.gate.reached.wait()
    # the projections panel polls: it shows the rebuild held in its verify phase with a bar
    await page.wait_for_selector("#rebuild-order_state .phase:text-is('verify')")
    assert await page.locator("#rebuild-order_state .bar").count() == 1
    await screenshot(page, "ops-rebuild-progress")
    console.gate.release.set()
    await page.wait_for_selector("#rebuild-order_state .rebuild-done", timeout=60_000)
    assert "swapped" in await text(page, "#rebuild-order_state")
    version = await console.pool.fetchval(
        "SELECT version FROM projection_versions WHERE projection = 'order_state' AND status = 'live'"
    )
    assert version == order_state.PROJECTION.version + 1, "the console's deploy version is live"
    assert await text(page, f"#projection-order_state-v{version} .status") == "live"
    await screenshot(page, "ops-rebuild-done")

    # and back: the previous version (kept fresh by its runner) serves again
    await page.click("#rollback-button-order_state")
    await page.wait_for_selector("#flash")
    assert "live again" in await text(page, "#flash"), await text(page, "#flash")
    live = await console.pool.fetchval(
        "SELECT version FROM projection_versions WHERE projection = 'order_state' AND status = 'live'"
    )
    assert live == version - 1
    assert await text(page, f"#projection-order_state-v{live} .status") == "live"


async def test_a_read_only_token_sees_no_action_buttons_and_gets_403_when_it_posts_anyway(console: Console) -> None:
    order_id = await console.place(order_body())
    await park_for_omneo(console, order_id)
    page = await console.signed_in("readonly")
    await page.goto(f"{console.url}/console/ops")
    await page.wait_for_selector(f"#parked-omneo-{order_id}")
    for button in (".redrive-button", ".rebuild-button", ".rollback-button"):
        assert await page.locator(button).count() == 0, button
    await screenshot(page, "ops-read-only")
    csrf = json.loads(await page.get_attribute("body", "hx-headers") or "{}")["X-CSRF-Token"]
    for path, form in (
        ("/console/ops/redrive", f"destination=omneo&order_id={order_id}"),
        ("/console/ops/projections/order_state/rebuild", ""),
        ("/console/ops/projections/order_state/rollback", ""),
    ):
        status = await page.evaluate(
            """async ([path, form, csrf]) => (await fetch(path, {method: 'POST', body: form + '&csrf=' + csrf,
                 headers: {'Content-Type': 'application/x-www-form-urlencoded'}})).status""",
            [path, form, csrf],
        )
        assert status == 403, path
    assert await console.pool.fetchval("SELECT count(*) FROM fanout_parked WHERE order_id = $1", order_id) == 1

    # an admin's POST without the session's CSRF value is refused as well
    admin = await console.signed_in("admin")
    status = await admin.evaluate(
        """async (form) => (await fetch('/console/ops/redrive', {method: 'POST', body: form,
             headers: {'Content-Type': 'application/x-www-form-urlencoded'}})).status""",
        f"destination=omneo&order_id={order_id}",
    )
    assert status == 403
    assert await console.pool.fetchval("SELECT count(*) FROM fanout_parked WHERE order_id = $1", order_id) == 1


async def test_signing_in_needs_a_known_token_and_pages_need_a_session(console: Console) -> None:
    page = await console.page()
    await page.goto(f"{console.url}/console/ops")
    await page.wait_for_selector("#token")
    await page.fill("#token", "lgr_not-a-token")
    await page.click("#signin")
    await page.wait_for_selector("#error")
    assert "unknown" in await text(page, "#error")
    await page.fill("#token", console.tokens["readonly"])
    await page.click("#signin")
    await page.wait_for_selector("#who")
    assert page.url.endswith("/console/ops"), "back where the visitor was going"
    cookies = {c["name"]: c for c in await page.context.cookies()}
    session = cookies["console_session"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Strict"
    assert console.tokens["readonly"] not in session["value"]


@pytest.mark.kafka
async def test_an_operator_sees_the_last_reconciliation_with_zero_mismatches(
    console: Console, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    # the log on a real topic (the relay), in both read models (runners), delivered (delivery rows)
    events = await reconcile_support._pipeline(console.pool, store, database_url, kafka_bootstrap, unique_topic)
    report = await run_reconciliation(
        console.pool, ReconcileOptions(bootstrap_servers=kafka_bootstrap, topic=unique_topic)
    )
    assert report.ok, report.as_json()
    page = await console.signed_in("readonly")
    await page.goto(f"{console.url}/console/ops")
    assert await text(page, "#reconcile-status") == "finished"
    assert await text(page, "#reconcile-mismatches") == "0"
    assert await page.locator("#reconcile-ok").count() == 1
    assert f"events {events}" in await text(page, "#reconcile-counts")
    await screenshot(page, "ops-reconciliation")

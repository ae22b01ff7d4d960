"""The console's HTTP rules without a browser: sessions, revocation, CSRF, redirects, exports."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import httpx
import pytest
import pytest_asyncio
import structlog

from consumers.fanout.delivery_store import FanoutStore
from ledger.api.auth import TokenStore
from ledger_app.api import create_app
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import Settings
from projections.setup import install_projections
from tests.integration.projections.support import wait_fenced

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


@dataclass
class App:
    client: httpx.AsyncClient
    tokens: TokenStore
    secrets: dict[str, str]
    ids: dict[str, str]


@pytest_asyncio.fixture(loop_scope="session")
async def app(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[App]:
    await install_projections(database_url)
    tokens = TokenStore(pool)  # the console's: a revocation through it clears its cache at once
    application = create_app(
        Settings(database_url=database_url), pool=pool, metrics=Metrics(), console={"tokens": tokens}
    )
    secrets: dict[str, str] = {}
    ids: dict[str, str] = {}
    for name, scopes in (
        ("admin", ["admin"]),
        ("reader", ["orders:read", "audit:read"]),
        ("writer", ["orders:write"]),
        ("=2+3", ["orders:write"]),  # a name a spreadsheet would run as a formula
    ):
        secret, principal = await tokens.create(name if name.startswith("=") else f"console-{name}", scopes)
        secrets[name], ids[name] = secret, principal.token_id
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            yield App(client, tokens, secrets, ids)


async def sign_in(client: httpx.AsyncClient, secret: str, next_path: str = "/console/orders") -> httpx.Response:
    form = await client.get("/console/signin", params={"next": next_path})
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert nonce is not None
    return await client.post(
        "/console/signin",
        data={"csrf": nonce[1], "token": secret, "next": next_path},
    )


def csrf_of(page: str) -> str:
    found = re.search(r'"X-CSRF-Token": "([^"]+)"', page)
    assert found is not None
    return found[1]


async def test_pages_redirect_to_sign_in_and_a_revoked_token_ends_its_session(app: App) -> None:
    client = app.client
    response = await client.get("/console/audit")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/signin?next=%2Fconsole%2Faudit"
    signed = await sign_in(client, app.secrets["reader"], "/console/audit")
    assert signed.status_code == 303
    assert signed.headers["location"] == "/console/audit"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert app.secrets["reader"] not in cookie
    assert (await client.get("/console/audit")).status_code == 200

    assert await app.tokens.revoke(UUID(app.ids["reader"]))
    assert (await client.get("/console/audit")).status_code == 303, "the session ended with its token"
    client.cookies.clear()


async def test_sign_in_refuses_a_missing_form_value_an_unknown_token_and_a_foreign_next(app: App) -> None:
    client = app.client
    no_nonce = await client.post("/console/signin", data={"token": app.secrets["admin"]})
    assert no_nonce.status_code == 403
    unknown = await sign_in(client, "lgr_unknown")
    assert unknown.status_code == 401
    assert "unknown or revoked token" in unknown.text
    foreign = await sign_in(client, app.secrets["admin"], "//evil.example/console")
    assert foreign.status_code == 303
    assert foreign.headers["location"] == "/console/orders"


async def test_a_post_needs_the_session_csrf_value_and_the_admin_scope(app: App, pool: asyncpg.Pool) -> None:
    client = app.client
    await sign_in(client, app.secrets["admin"])
    ops = await client.get("/console/ops")
    assert ops.status_code == 200
    assert ops.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in ops.headers["content-security-policy"]
    token = csrf_of(ops.text)
    refused = await client.post("/console/ops/projections/order_state/rollback", data={"csrf": "nope"})
    assert refused.status_code == 403
    with structlog.testing.capture_logs() as logs:
        answered = await client.post("/console/ops/projections/order_state/rollback", data={"csrf": token})
    assert answered.status_code == 303, "the admin's action ran (and was refused: nothing to roll back)"
    assert "rollback+refused" in answered.headers["location"]
    actions = [e for e in logs if e["event"] == "console action"]
    assert [(e["action"], e["actor"], e["token_id"]) for e in actions] == [
        ("rollback", "console-admin", app.ids["admin"])
    ]
    await FanoutStore(pool, "omnisend").halt(401, "omnisend answered 401: the API key was refused", None)
    halted = await client.get("/console/ops")
    assert "omnisend is halted" in halted.text
    assert "ledger fanout resume -d omnisend" in halted.text
    client.cookies.clear()

    await sign_in(client, app.secrets["writer"])
    assert (await client.get("/console/orders")).status_code == 403, "orders:write is not orders:read"
    client.cookies.clear()


async def test_the_csv_export_defuses_spreadsheet_formulas_and_json_lines_match_the_api(
    app: App, pool: asyncpg.Pool
) -> None:
    client = app.client
    body = {
        "currency": "AUD",
        "total": 10,
        "note": "=HYPERLINK(\"http://x\")",
        "items": [{"line_id": "A", "name": "=1+1", "quantity": 1, "price_sell": 10}],
    }
    placed = await client.post(
        "/api/v3/orders",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {app.secrets['=2+3']}", "Content-Type": "application/json"},
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["data"]["id"]
    await wait_fenced(pool)  # the feed reads the fenced log: a writer elsewhere in the cluster holds it
    await sign_in(client, app.secrets["reader"])
    jsonl = await client.get("/console/audit/export.jsonl", params={"type": "OrderPlaced"})
    assert jsonl.status_code == 200
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    api = await client.get(
        "/api/v3/events",
        params={"type": "OrderPlaced"},
        headers={"Authorization": f"Bearer {app.secrets['admin']}"},
    )
    assert lines == api.json()["data"], "the same events, as the API's audit feed shows them"
    exported = await client.get("/console/audit/export.csv", params={"type": "OrderPlaced"})
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0][:3] == ["recorded_at", "position", "order_id"]
    mine = next(r for r in rows[1:] if r[2] == order_id)
    assert mine[4] == "OrderPlaced"
    assert mine[5] == "'=2+3", "the actor's name is text, not a formula"
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in mine), mine
    client.cookies.clear()

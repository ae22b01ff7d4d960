"""`ledger audit`: who changed what, the order as it was, and a tampered row caught by the hash chain."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from ledger_app.cli import app
from tests.integration.api.conftest import Api

pytestmark = pytest.mark.postgres

ORDER = {
    "external_id": "AUDIT-1",
    "currency": "AUD",
    "total": 59.90,
    "items": [{"line_id": "L1", "name": "Scarf", "quantity": 2, "price_sell": 29.95}],
}


async def _invoke(database_url: str, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, app, list(args), env={"LEDGER_DATABASE_URL": database_url}
    )
    return result.exit_code, result.output


async def _order_with_history(api: Api) -> str:
    placed = await api.client.post("/api/v3/orders", json=ORDER, headers=api.auth())
    assert placed.status_code == 201, placed.text
    oid: str = placed.json()["data"]["id"]
    updated = await api.client.put(f"/api/v3/orders/{oid}", json={"status": "processing"}, headers=api.auth())
    assert updated.status_code == 200, updated.text
    return oid


async def test_history_names_the_actor_of_every_change_and_shows_the_order_as_it_was(
    api: Api, database_url: str
) -> None:
    oid = await _order_with_history(api)

    code, out = await _invoke(database_url, "audit", "history", oid, "--version", "1", "--json")

    assert code == 0, out
    report = json.loads(out)
    assert [h["type"] for h in report["history"]] == ["OrderPlaced", "OrderStatusChanged"]
    assert {h["metadata"]["actor"] for h in report["history"]} == {"checkout"}
    assert report["state"]["version"] == 1
    assert report["state"]["status"] == "pending"


async def test_verify_passes_on_an_untouched_log_and_names_the_first_tampered_version(
    api: Api, database_url: str
) -> None:
    oid = await _order_with_history(api)
    code, out = await _invoke(database_url, "audit", "verify", oid)
    assert code == 0, out
    assert "0 broken" in out

    async with api.pool.acquire() as conn:
        # The log is append-only by trigger; an attacker with superuser rights can still bypass it.
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "UPDATE events SET data = jsonb_set(data, '{status}', '\"shipped\"')"
            " WHERE stream_id = $1 AND version = 2",
            f"order-{oid}",
        )
        await conn.execute("SET session_replication_role = origin")

    code, out = await _invoke(database_url, "audit", "verify")
    assert code == 1
    assert f"order-{oid}: broken at version 2" in out

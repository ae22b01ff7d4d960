"""`ledger fanout parked|redrive|replay` through typer, against a real database."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from typer.testing import CliRunner

from consumers.cli import app
from consumers.fanout.delivery_store import FanoutStore

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]


async def test_parked_lists_reasons_and_usage_errors(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FanoutStore(pool, "omneo")
    order_id = str(uuid.uuid4())
    async with store.order_lock(order_id) as conn:
        await store.park(
            conn,
            order_id,
            [("e1", 1, 10, b"{}"), ("e2", 2, 11, b"{}")],
            "omneo.order.create rejected: HTTP 422 validation",
            {"errors": {"total": ["bad"]}},
        )
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, app, ["parked", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [(p["order_id"], p["waiting"]) for p in out["parked"]] == [(order_id, 2)]
    assert "422" in out["parked"][0]["reason"]
    table = await asyncio.to_thread(runner.invoke, app, ["parked", "--destination", "omneo"])
    assert table.exit_code == 0
    assert order_id[:8] in table.output
    bad = await asyncio.to_thread(runner.invoke, app, ["replay", "--destination", "omneo"])
    assert bad.exit_code == 2, "replay needs --order or --from-position"
    wrong = await asyncio.to_thread(runner.invoke, app, ["parked", "--destination", "mailchimp"])
    assert wrong.exit_code == 2

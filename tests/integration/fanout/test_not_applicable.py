"""An order Omnisend cannot take (no email, no phone) is recorded as not applicable, not parked,
and delivered once a later event makes it applicable: worker, Kafka, PostgreSQL, sandbox."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from consumers.cli import app as fanout_cli
from ledger_kernel.observability import Metrics
from tests.integration.fanout.support import make_settings, new_topic, publish, sandbox, wait_for, worker
from tests.unit.mapping.story import OrderStory

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]


async def _outcomes(pool: asyncpg.Pool, order_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT outcome FROM fanout_inbox WHERE destination = 'omnisend' AND order_id = $1 ORDER BY version",
        order_id,
    )
    return [r["outcome"] for r in rows]


def _for_order(requests: list[dict[str, Any]], order_id: str) -> list[dict[str, Any]]:
    return [r for r in requests if order_id in json.dumps(r.get("body"), default=str) + r["path"]]


@pytest.mark.parametrize("mode", ["orders", "events"])
async def test_order_without_contact_is_not_applicable_not_parked_then_delivered_once_it_has_an_email(
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    unique_topic: str,
    mode: str,
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    walk_in = OrderStory()
    metrics = Metrics()
    async with sandbox("omnisend") as omnisend:
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=omnisend, mode=mode)
        async with worker("omnisend", settings, pool, metrics):
            await publish(
                kafka_bootstrap, topic, walk_in.place(email=None, phone=None) + walk_in.pay("20.00")
            )

            async def handled() -> bool:
                return len(await _outcomes(pool, walk_in.order_id)) >= 2

            await wait_for(handled, what="both events of the walk-in order handled")

            assert await _outcomes(pool, walk_in.order_id) == ["not_applicable", "not_applicable"]
            assert await pool.fetchval("SELECT count(*) FROM fanout_parked") == 0, "not parked"
            reason = await pool.fetchval(
                "SELECT not_applicable FROM fanout_delivery WHERE destination = 'omnisend' AND order_id = $1",
                walk_in.order_id,
            )
            assert "email" in reason
            assert _for_order(await omnisend.requests(), walk_in.order_id) == [], "nothing sent"
            counted = metrics.registry.get_sample_value(
                "ledger_fanout_not_applicable_total", {"destination": "omnisend", "reason": "no_contact"}
            )
            assert counted == 2

            cli = CliRunner(env={"LEDGER_DATABASE_URL": database_url})
            shown = await asyncio.to_thread(
                cli.invoke, fanout_cli, ["status", "--order", walk_in.order_id, "--json"]
            )
            assert shown.exit_code == 0, shown.output
            state = {d["destination"]: d for d in json.loads(shown.output)["destinations"]}
            assert state["omnisend"]["not_applicable"] == reason
            assert state["omnisend"]["parked"] is None
            summary = await asyncio.to_thread(cli.invoke, fanout_cli, ["status", "--json"])
            listed = json.loads(summary.output)["not_applicable"]
            assert [(r["destination"], r["order_id"]) for r in listed] == [("omnisend", walk_in.order_id)]
            table = await asyncio.to_thread(cli.invoke, fanout_cli, ["status", "--destination", "omnisend"])
            assert table.exit_code == 0, table.output
            assert walk_in.order_id[:8] in table.output

            await publish(kafka_bootstrap, topic, walk_in.update(email="late@example.com"))

            async def delivered() -> bool:
                return len(await _outcomes(pool, walk_in.order_id)) >= 3

            await wait_for(delivered, what="the event that added the email handled")

        assert (await _outcomes(pool, walk_in.order_id))[-1] == "delivered"
        assert (
            await pool.fetchval(
                "SELECT not_applicable FROM fanout_delivery WHERE destination = 'omnisend' AND order_id = $1",
                walk_in.order_id,
            )
            is None
        )
        sent = _for_order(await omnisend.requests(), walk_in.order_id)
        assert [r["status"] for r in sent if r["status"] >= 400] == []
        held = await omnisend.state()
        if mode == "orders":
            assert [(r["method"], r["path"]) for r in sent] == [("POST", "/v3/orders")]
            order = held["orders"][walk_in.order_id]
            assert order["email"] == "late@example.com"
            assert order["paymentStatus"] == "paid", "the order as it is now, not as it was placed"
        else:
            events = [e for e in held["events"] if e["properties"]["orderID"] == walk_in.order_id]
            assert [e["eventName"] for e in events] == ["placed order"]
            assert events[0]["contact"]["email"] == "late@example.com"
            assert events[0]["properties"]["paymentStatus"] == "paid"

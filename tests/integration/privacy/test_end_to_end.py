"""Done when (issue #18): a customer's orders through the API, the relay and both workers, erased;
then no plain text of them in PostgreSQL, the API, the CLI, Kafka or the logs; audit verifies;
Transactions and totals unchanged; the other customer untouched; the destinations' deletes recorded."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from ledger.store.chain import verify_stream
from ledger_kernel.settings import PrivacySettings
from tests.harness.kafka import read_to_end
from tests.integration.fanout.support import make_settings, sandbox, wait_for, worker
from tests.integration.privacy.conftest import ALICE, BOB, PrivacyApi, dump_text, plain_values
from tests.integration.privacy.test_cli import _invoke
from tests.integration.relay.test_relay import running_relay

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]


async def _order_with_transaction(papi: PrivacyApi, customer: dict[str, Any]) -> dict[str, Any]:
    order = await papi.place(**customer)
    oid = order["id"]
    paid = await papi.client.post(
        f"/api/v3/orders/{oid}/payments", json={"kind": "captured", "amount": 110}, headers=papi.auth()
    )
    assert paid.status_code == 201, paid.text
    shipped = await papi.client.post(
        f"/api/v3/orders/{oid}/shipments",
        json={"lines": [{"sku": "TC-1", "quantity": 1}]},
        headers=papi.auth(),
    )
    assert shipped.status_code == 201, shipped.text
    return order


async def _erased_events(papi: PrivacyApi) -> list[str]:
    rows = await papi.pool.fetch("SELECT event_id::text AS id FROM events WHERE type = 'PersonalDataErased'")
    return [r["id"] for r in rows]


async def _carried_out(papi: PrivacyApi, destination: str, event_ids: list[str]) -> bool:
    done = await papi.pool.fetchval(
        "SELECT count(*) FROM fanout_inbox WHERE destination = $1 AND event_id = ANY($2::text[])",
        destination,
        event_ids,
    )
    return int(done) == len(event_ids)


async def test_an_erased_customer_leaves_no_plain_text_anywhere_and_nothing_else_changes(
    papi: PrivacyApi, kafka_bootstrap: str, unique_topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The test's own HTTP client (httpx) logs each URL it calls at INFO, the erase route's
    # `email:` subject among them; that is this test's client, not the ledger, so it stays quiet
    # (where an earlier test left a handler on a closed stream, logging's error dump would print it).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    async with sandbox("omneo") as omneo, sandbox("omnisend") as omnisend:
        settings = make_settings(
            papi.database_url,
            kafka_bootstrap,
            unique_topic,
            omneo=omneo,
            omnisend=omnisend,
            default_location_id="online",  # online orders ship from no store (as `ledger dev` sets)
        )
        settings.privacy = PrivacySettings(kek=SecretStr(papi.kek))
        settings.store.poll_interval_s = 0.05
        async with (
            running_relay(settings, papi.pool),
            worker("omneo", settings, papi.pool),
            worker("omnisend", settings, papi.pool),
        ):
            alice = [await _order_with_transaction(papi, ALICE) for _ in range(2)]
            bob = await _order_with_transaction(papi, BOB)
            total_events = await papi.event_count()

            async def delivered() -> bool:
                parked = await papi.pool.fetch(
                    "SELECT destination, reason, detail FROM fanout_parked LIMIT 1"
                )
                assert not parked, [dict(r) for r in parked]
                counts = await papi.pool.fetch(
                    "SELECT destination, count(*) AS n FROM fanout_inbox GROUP BY destination"
                )
                return {r["destination"]: r["n"] for r in counts} == {
                    "omneo": total_events,
                    "omnisend": total_events,
                }

            await wait_for(delivered, timeout=60, what="both workers delivered every event")
            # The destinations got plain values (the workers opened them with the key store).
            assert ALICE["email"] in str(await omnisend.state())
            assert ALICE["email"] in str(await omneo.requests())
            before = {
                o["id"]: (
                    await papi.client.get(f"/api/v3/orders/{o['id']}/transactions", headers=papi.auth())
                ).json()
                for o in alice
            }
            totals = {o["id"]: o["total"] for o in alice}

            erased = await papi.client.post(
                f"/api/v3/subjects/email:{ALICE['email']}/erase",
                json={"basis": "GDPR art. 17"},
                headers=papi.privacy(),
            )
            assert erased.status_code == 200, erased.text
            event_ids = await _erased_events(papi)
            assert len(event_ids) == 2
            for destination in ("omneo", "omnisend"):
                await wait_for(
                    lambda d=destination: _carried_out(papi, d, event_ids),  # type: ignore[misc]
                    timeout=60,
                    what=f"{destination} carried out the erasure",
                )

        deletes = {
            name: [r for r in await box.requests() if r.get("method") == "DELETE"]
            for name, box in (("omneo", omneo), ("omnisend", omnisend))
        }
        assert len(deletes["omneo"]) == 2
        assert len(deletes["omnisend"]) == 2
        assert {alice[0]["id"], alice[1]["id"]} <= {r["path"].rsplit("/", 1)[-1] for r in deletes["omnisend"]}
        omnisend_state, omneo_state = await omnisend.state(), await omneo.state()
        for value in plain_values(ALICE):
            assert value not in str(omnisend_state), value
            assert value not in str(omneo_state["orders"]), value
        # What Omneo cannot erase through the ledger (docs/connectors.md#erasure): its
        # Transactions stay, linked to the profile by the email handle, and carry nothing else.
        kept = str(omneo_state["transactions"])
        assert [v for v in plain_values(ALICE) if v in kept] == [ALICE["email"]]
        assert BOB["email"] in str(omnisend_state)  # the other customer is untouched
        assert BOB["email"] in str(omneo_state["transactions"])

    report = await papi.client.get(f"/api/v3/subjects/email:{ALICE['email']}/erasure", headers=papi.privacy())
    places = {p["place"]: p for p in report.json()["data"]["places"]}
    for place in (
        "event_store",
        "read_model:order_state",
        "kafka:orders.events",
        "destination:omneo",
        "destination:omnisend",
    ):
        assert places[place]["status"] == "erased", (place, places[place])

    outputs = [report.text]
    for order in alice:
        got = await papi.client.get(f"/api/v3/orders/{order['id']}", headers=papi.auth())
        assert got.json()["data"]["total"] == totals[order["id"]]
        txs = await papi.client.get(f"/api/v3/orders/{order['id']}/transactions", headers=papi.auth())
        assert txs.json() == before[order["id"]]
        history = await papi.client.get(f"/api/v3/orders/{order['id']}/events", headers=papi.auth())
        outputs += [got.text, history.text]
        assert (await verify_stream(papi.pool, f"order-{order['id']}")).ok
    outputs.append(
        (
            await papi.client.get(f"/api/v3/subjects/email:{ALICE['email']}/export", headers=papi.privacy())
        ).text
    )
    assert (await papi.client.get(f"/api/v3/orders/{bob['id']}", headers=papi.auth())).json()["data"][
        "email"
    ] == BOB["email"]
    for args in (
        ("privacy", "status", f"order:{alice[0]['id']}"),
        ("audit", "history", alice[0]["id"], "--json"),
    ):
        code, out = await _invoke(papi, *args)
        assert code == 0, out
        outputs.append(out)
    code, verify = await _invoke(papi, "audit", "verify")
    assert code == 0, verify

    messages = [r.value or b"" for r in await read_to_end(kafka_bootstrap, unique_topic)]
    assert any(b"PersonalDataErased" in m for m in messages)
    dump = await dump_text(papi.pool)
    logs = capsys.readouterr()
    for value in plain_values(ALICE):
        assert value not in dump, f"{value} in PostgreSQL"
        assert all(value not in out for out in outputs), f"{value} in an API or CLI output"
        assert all(value.encode() not in m for m in messages), f"{value} on Kafka"
        assert value not in logs.out + logs.err, f"{value} in the logs"
    for value in plain_values(BOB):  # sealed at rest and on Kafka, even while not erased
        assert value not in dump
        assert all(value.encode() not in m for m in messages)

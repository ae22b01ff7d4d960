"""Personal data through the API: sealed at rest, opened on read, erased by subject, exported, reported."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ledger.store.chain import verify_stream
from tests.integration.privacy.conftest import ALICE, BOB, PrivacyApi, dump_text, plain_values

pytestmark = pytest.mark.postgres


async def _get(papi: PrivacyApi, order_id: str) -> dict[str, Any]:
    response = await papi.client.get(f"/api/v3/orders/{order_id}", headers=papi.auth())
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def _erase(papi: PrivacyApi, subject: str, **body: Any) -> Any:
    return await papi.client.post(
        f"/api/v3/subjects/{subject}/erase", json=body or None, headers=papi.privacy()
    )


async def test_personal_fields_are_stored_sealed_and_read_back_in_plain_text(papi: PrivacyApi) -> None:
    order = await papi.place(**ALICE)
    assert order["email"] == ALICE["email"]
    got = await _get(papi, order["id"])
    assert (got["email"], got["phone"], got["first_name"]) == (
        ALICE["email"],
        ALICE["phone"],
        ALICE["first_name"],
    )
    assert got["billing_address"]["address"] == ALICE["billing_address"]["address"]
    assert got["billing_address"]["country_code"] == "AU"  # not personal: stays readable
    assert got["note"] == ALICE["note"]
    stored = await papi.pool.fetchval(
        "SELECT data::text FROM events WHERE stream_id = $1", f"order-{order['id']}"
    )
    for value in plain_values(ALICE):
        assert value not in stored
    assert '"total": 11000' in stored  # amounts stay readable for folds and read models
    assert (await verify_stream(papi.pool, f"order-{order['id']}")).ok


async def test_erasing_by_email_erases_every_order_of_the_customer_and_nothing_else(papi: PrivacyApi) -> None:
    first = await papi.place(**ALICE)
    second = await papi.place(**ALICE)
    other = await papi.place(**BOB)
    paid = await papi.client.post(
        f"/api/v3/orders/{first['id']}/payments",
        json={"kind": "captured", "amount": 110},
        headers=papi.auth(),
    )
    assert paid.status_code == 201, paid.text
    before = await _get(papi, first["id"])

    erased = await _erase(papi, f"email:{ALICE['email']}", basis="GDPR art. 17 request #42")
    assert erased.status_code == 200, erased.text
    report = erased.json()["data"]
    assert sorted(report["orders"]) == sorted([first["id"], second["id"]])
    assert report["keys_destroyed"] == 1
    assert report["events_appended"] == 2
    assert ALICE["email"] not in erased.text

    after = await _get(papi, first["id"])
    for name in ("email", "phone", "first_name", "last_name", "note"):
        assert after[name] is None, name
    assert after["billing_address"]["address"] is None
    assert after["billing_address"]["country_code"] == "AU"
    for name in ("total", "payment_status", "items", "payments", "transactions", "subtotal"):
        assert after[name] == before[name], name
    assert after["version"] == before["version"] + 1

    history = await papi.client.get(f"/api/v3/orders/{first['id']}/events", headers=papi.auth())
    types = [e["type"] for e in history.json()["data"]]
    assert types[-1] == "PersonalDataErased"
    assert (await _get(papi, other["id"]))["email"] == BOB["email"]

    for order in (first, second, other):
        assert (await verify_stream(papi.pool, f"order-{order['id']}")).ok
    dump = await dump_text(papi.pool)
    for value in plain_values(ALICE):
        assert value not in dump, value


async def test_erasing_twice_changes_nothing_the_second_time(papi: PrivacyApi) -> None:
    order = await papi.place(profile_id="profile-77", **ALICE)
    assert (await _erase(papi, "profile:profile-77")).status_code == 200
    events = await papi.event_count()
    again = await _erase(papi, "profile:profile-77")
    assert again.status_code == 200, again.text
    assert again.json()["data"]["already_erased"] is True
    assert await papi.event_count() == events
    assert (await _get(papi, order["id"]))["email"] is None


async def test_erasing_by_order_id_erases_that_orders_subject(papi: PrivacyApi) -> None:
    order = await papi.place(**BOB)
    erased = await _erase(papi, f"order:{order['id']}")
    assert erased.status_code == 200, erased.text
    assert (await _get(papi, order["id"]))["first_name"] is None


async def test_unknown_and_malformed_subjects_are_clear_problems(papi: PrivacyApi) -> None:
    unknown = await _erase(papi, "email:nobody@example.org")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert unknown.json()["type"].endswith("subject-not-found")
    assert "nobody" not in unknown.json()["subject"]  # named by the email's blind index only
    malformed = await _erase(papi, "someone")
    assert malformed.status_code == 422
    assert malformed.json()["type"].endswith("invalid-subject")
    forbidden = await papi.client.post("/api/v3/subjects/profile:x/erase", headers=papi.auth())
    assert forbidden.status_code == 403


async def test_erasing_while_orders_are_written_loses_no_write_and_leaves_nothing_half_erased(
    papi: PrivacyApi,
) -> None:
    orders = [await papi.place(profile_id="profile-busy", **ALICE) for _ in range(3)]

    async def pay(order_id: str) -> int:
        response = await papi.client.post(
            f"/api/v3/orders/{order_id}/payments",
            json={"kind": "authorized", "amount": 10},
            headers=papi.auth(),
        )
        return response.status_code

    async def update(order_id: str) -> int:
        response = await papi.client.put(
            f"/api/v3/orders/{order_id}", json={"note": "ring twice"}, headers=papi.auth()
        )
        return response.status_code

    writes = [pay(o["id"]) for o in orders] * 1 + [update(o["id"]) for o in orders]
    results = await asyncio.gather(_erase(papi, "profile:profile-busy"), *writes)
    assert results[0].status_code == 200, results[0].text
    assert all(status in (200, 201) for status in results[1:]), results[1:]
    for order in orders:
        stream = f"order-{order['id']}"
        rows = await papi.pool.fetch("SELECT type FROM events WHERE stream_id = $1 ORDER BY version", stream)
        types = [r["type"] for r in rows]
        assert types.count("PaymentAuthorized") == 1
        assert types.count("PersonalDataErased") >= 1
        assert (await verify_stream(papi.pool, stream)).ok
        # Whatever landed before the erasure reads as erased; a note written after it (a new key) may read.
        got = await _get(papi, order["id"])
        assert got["email"] is None
        assert got["payments"]["authorized"] == 10
    # Erasing again settles any order that got personal data after the first erasure's event.
    assert (await _erase(papi, "profile:profile-busy")).status_code == 200
    dump = await dump_text(papi.pool)
    for value in plain_values(ALICE):
        assert value not in dump, value


async def test_export_returns_every_personal_datum_across_orders_and_none_after_erasure(
    papi: PrivacyApi,
) -> None:
    first = await papi.place(profile_id="profile-exp", **ALICE)
    await papi.client.put(
        f"/api/v3/orders/{first['id']}", json={"phone": "+61499000111"}, headers=papi.auth()
    )
    await papi.place(profile_id="profile-exp", **ALICE)
    export = await papi.client.get("/api/v3/subjects/profile:profile-exp/export", headers=papi.privacy())
    assert export.status_code == 200, export.text
    orders = export.json()["data"]["orders"]
    assert len(orders) == 2
    held = [e["personal_data"] for o in orders for e in o["events"]]
    assert {h["customer"]["phone"] for h in held} == {ALICE["phone"], "+61499000111"}
    assert all(h["billing_address"]["address"] == ALICE["billing_address"]["address"] for h in held)

    await _erase(papi, "profile:profile-exp")
    after = await papi.client.get("/api/v3/subjects/profile:profile-exp/export", headers=papi.privacy())
    assert after.status_code == 200
    for value in plain_values(ALICE):
        assert value not in after.text
    assert all(o["erased_at"] for o in after.json()["data"]["orders"])


async def test_the_erasure_report_says_what_was_erased_where_and_when(papi: PrivacyApi) -> None:
    await papi.place(profile_id="profile-rep", **BOB)
    before = await papi.client.get("/api/v3/subjects/profile:profile-rep/erasure", headers=papi.privacy())
    assert before.status_code == 200, before.text
    places = {p["place"]: p for p in before.json()["data"]["places"]}
    assert places["event_store"]["status"] == "pending"  # a live key: not erased yet

    await _erase(papi, "profile:profile-rep", basis="customer request")
    report = (
        await papi.client.get("/api/v3/subjects/profile:profile-rep/erasure", headers=papi.privacy())
    ).json()
    places = {p["place"]: p for p in report["data"]["places"]}
    assert places["event_store"]["status"] == "erased"
    assert places["event_store"]["erased_at"]
    assert places["read_model:order_state"]["status"] == "erased"
    assert places["kafka:orders.events"]["status"] == "erased"
    assert places["kafka:orders.intake"]["status"] == "unknown"  # no retention configured
    assert places["destination:omneo"]["status"] == "pending"  # no worker carried it out yet
    assert "DELETE /api/v3/orders" in places["destination:omneo"]["detail"]
    assert report["data"]["erasures"][0]["basis"] == "customer request"


async def test_an_order_whose_email_changed_is_erased_whole_by_either_address(papi: PrivacyApi) -> None:
    order = await papi.place(**BOB)
    changed = await papi.client.put(
        f"/api/v3/orders/{order['id']}", json={"email": "bobbin.new@example.org"}, headers=papi.auth()
    )
    assert changed.status_code == 200, changed.text
    index = await papi.pool.fetch(
        "SELECT subject FROM privacy_orders WHERE stream_id = $1", f"order-{order['id']}"
    )
    # Both subjects, indexed from the appends' own metadata (migration 0012's view over `events`).
    assert len({r["subject"] for r in index}) == 2
    erased = await _erase(papi, "email:bobbin.new@example.org")
    assert erased.status_code == 200, erased.text
    assert erased.json()["data"]["keys_destroyed"] == 2
    dump = await dump_text(papi.pool)
    for value in [*plain_values(BOB), "bobbin.new@example.org"]:
        assert value not in dump, value


async def test_orders_indexed_by_the_former_trigger_table_are_still_found_by_an_erasure(
    papi: PrivacyApi,
) -> None:
    order = await papi.place(profile_id="profile-kept", **BOB)
    stream = f"order-{order['id']}"
    # A row migration 0011's trigger wrote, for a subject no event of this database names.
    await papi.pool.execute(
        "INSERT INTO privacy_orders_0011 (stream_id, subject) VALUES ($1, 'profile:profile-legacy')", stream
    )
    erased = await _erase(papi, "profile:profile-legacy")
    assert erased.status_code == 200, erased.text
    assert erased.json()["data"]["orders"] == [order["id"]]

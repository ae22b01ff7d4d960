"""Read models hold the sealed form: lists open it, an erasure shows at once, a rebuild after it verifies."""

from __future__ import annotations

import dataclasses

import pytest

from projections import order_state, registry, transactions
from projections.rebuild import rebuild
from tests.integration.privacy.conftest import ALICE, BOB, PrivacyApi, plain_values
from tests.integration.projections.support import drain

pytestmark = pytest.mark.postgres


async def _drain_all(papi: PrivacyApi) -> None:
    for projection in (order_state.PROJECTION, transactions.PROJECTION):
        await drain(papi.pool, projection)


async def test_lists_open_the_sealed_rows_and_show_an_erasure_at_once_and_a_rebuild_verifies(
    papi: PrivacyApi,
) -> None:
    alice = await papi.place(profile_id="profile-rm-a", **ALICE)
    bob = await papi.place(profile_id="profile-rm-b", **BOB)
    await _drain_all(papi)
    rows = "\n".join(
        r["doc"] + str(r["email"]) for r in await papi.pool.fetch("SELECT doc, email FROM order_state")
    )
    for value in plain_values(ALICE):
        assert value not in rows  # the read model holds tokens only
    listed = await papi.client.get("/api/v3/orders?profile_id=profile-rm-a", headers=papi.auth())
    assert [o["email"] for o in listed.json()["data"]] == [ALICE["email"]]

    erased = await papi.client.post("/api/v3/subjects/profile:profile-rm-a/erase", headers=papi.privacy())
    assert erased.status_code == 200, erased.text
    # Before the projection even sees the PersonalDataErased event, the key is gone.
    listed = await papi.client.get("/api/v3/orders?profile_id=profile-rm-a", headers=papi.auth())
    [row] = listed.json()["data"]
    assert row["email"] is None
    assert row["billing_address"]["address"] is None
    assert row["total"] == alice["total"]
    await _drain_all(papi)
    other = await papi.client.get("/api/v3/orders?profile_id=profile-rm-b", headers=papi.auth())
    assert [o["email"] for o in other.json()["data"]] == [BOB["email"]]
    assert other.json()["data"][0]["id"] == bob["id"]

    next_version = dataclasses.replace(order_state.PROJECTION, version=order_state.PROJECTION.version + 1)
    report = await rebuild(papi.pool, next_version, page_size=50)
    assert report.swapped
    assert await registry.live_version(papi.pool, order_state.NAME) == next_version.version

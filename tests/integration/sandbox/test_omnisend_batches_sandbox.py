"""The Omnisend sandbox's v3 batches over real HTTP, as the vendor documents them (async, per item)."""

from __future__ import annotations

from consumers.http import Permanent, Success
from consumers.omnisend.client import OmnisendClient
from tests.integration.sandbox.conftest import Running, v3_order


async def test_a_batch_is_queued_runs_only_after_a_status_read_and_answers_per_item(
    omnisend: OmnisendClient, omnisend_box: Running
) -> None:
    assert isinstance(await omnisend.create_order(v3_order("ord-1")), Success)
    created = await omnisend.create_batch("POST", "orders", [v3_order("ord-1"), v3_order("ord-2")])
    assert isinstance(created, Success)
    assert created.remote_id is not None
    assert created.body["totalCount"] == 2
    assert "ord-2" not in (await omnisend_box.state())["orders"], "queued, not run"
    first = await omnisend.get_batch(created.remote_id)
    assert isinstance(first, Success)
    assert first.body["status"] == "inProgress"
    done = await omnisend.get_batch(created.remote_id)
    assert isinstance(done, Success)
    assert (done.body["status"], done.body["finishedCount"], done.body["errorsCount"]) == ("finished", 2, 1)
    items = await omnisend.get_batch_items(created.remote_id)
    assert isinstance(items, Success)
    assert [(r["request"]["orderID"], r["responseCode"]) for r in items.body["responses"]] == [("ord-2", 200)]
    [error] = items.body["errors"]
    assert (error["request"]["orderID"], error["responseCode"]) == ("ord-1", 409)
    outcome = omnisend.item_outcome(error["responseCode"], error["response"])
    assert isinstance(outcome, Permanent)
    assert outcome.reason == "already_exists", "an item's answer reads as the single call's"
    assert "ord-2" in (await omnisend_box.state())["orders"]


async def test_a_batch_the_vendor_would_refuse_is_refused_whole(omnisend: OmnisendClient) -> None:
    too_many = [v3_order(f"o{i}") for i in range(1001)]
    assert isinstance(await omnisend.create_batch("POST", "orders", too_many), Permanent)
    assert isinstance(await omnisend.create_batch("PATCH", "orders", [v3_order()]), Permanent)
    assert isinstance(await omnisend.get_batch("000000000000000000000000"), Permanent)

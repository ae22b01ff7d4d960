"""Omneo mapping: orders and one Transaction per paid shipment (pure)."""

from __future__ import annotations

from decimal import Decimal

from consumers.fanout.mapping_types import REMOTE_ID
from consumers.omneo.mapping import OmneoOptions, OmneoState, map_batch, map_event
from tests.unit.mapping.story import OrderStory, parse


def _delivered(story: OrderStory, remote_id: str = "1001") -> OmneoState:
    sent: dict[str, str] = {}
    for env in story.envelopes:
        for call in map_event(parse(env), OmneoState(remote_id, sent)):
            sent.update(call.remember)
    return OmneoState(remote_id, sent)


def test_placed_order_is_one_create_with_omneo_fields() -> None:
    story = OrderStory()
    calls = map_event(parse(story.place(price="199.95")[0]), OmneoState())
    assert [(c.kind, c.method, c.path) for c in calls] == [("omneo.order.create", "POST", "/api/v3/orders")]
    body = calls[0].body
    assert body is not None
    assert body["external_id"] == story.order_id
    assert body["total"] == Decimal("399.90")
    assert body["status"] == "pending"
    assert body["profile_id"] == "9332c9b2-e31c-4d49-8ec3-62a9466d339c"
    item = body["items"][0]
    assert item["price_sell"] == Decimal("199.95")
    assert item["product_variant_id"] == 1000
    assert set(item) >= {"name", "quantity", "price_current", "price_sell", "price_original"}


def test_split_shipment_gives_one_transaction_per_paid_shipment() -> None:
    story = OrderStory()
    story.place()
    story.pay("20.00")
    state = _delivered(story)
    first = map_event(parse(story.ship("S1", "L1")[0]), state)
    txs = [c for c in first if c.kind == "omneo.transaction.upsert"]
    assert len(txs) == 1
    tx = txs[0]
    assert tx.path == "/api/v3/transactions/update-create"
    assert tx.key == f"{story.order_id}:S1"
    assert tx.body is not None
    assert tx.body["order_id"] == REMOTE_ID
    assert tx.needs_remote_id
    assert tx.body["total"] == Decimal("10.00")
    assert tx.body["items"] == [
        {
            "name": "Item 1",
            "external_id": "L1",
            "quantity": 1,
            "price_current": Decimal("10.00"),
            "price_sell": Decimal("10.00"),
            "price_original": Decimal("10.00"),
            "product_variant_id": 1000,
            "sku": "SKU-1",
        }
    ]
    assert "is_void" not in tx.body, "never send is_void: null/false"
    state = _delivered(story)
    second = map_event(parse(story.ship("S2", "L2")[0]), state)
    kinds = [c.kind for c in second]
    assert kinds.count("omneo.transaction.upsert") == 1, "S1 is unchanged, only S2 is new"
    assert any(c.kind == "omneo.order.update" and c.body == {"status": "fulfilled"} for c in second)


def test_transaction_items_carry_the_order_lines_prices_and_variant() -> None:
    """Omneo's price_current is the product's current price, not what was paid (price_sell)."""
    story = OrderStory()
    story.place(price="8.00", current="10.00", original="12.00")
    story.pay("16.00")
    state = _delivered(story)
    (tx,) = [
        c for c in map_event(parse(story.ship("S1", "L2")[0]), state) if c.kind == "omneo.transaction.upsert"
    ]
    assert tx.body is not None
    (item,) = tx.body["items"]
    assert (item["price_current"], item["price_sell"], item["price_original"]) == (
        Decimal("10.00"),
        Decimal("8.00"),
        Decimal("12.00"),
    )
    assert (item["external_id"], item["quantity"], item["product_variant_id"]) == ("L2", 1, 1001)


def test_unpaid_shipment_makes_no_transaction() -> None:
    story = OrderStory()
    story.place()
    state = _delivered(story)
    calls = map_event(parse(story.ship("S1", "L1")[0]), state)
    assert [c.kind for c in calls if c.kind == "omneo.transaction.upsert"] == []


def test_full_refund_voids_every_transaction() -> None:
    story = OrderStory()
    story.place()
    story.pay("20.00")
    story.ship("S1", "L1")
    story.ship("S2", "L2")
    state = _delivered(story)
    calls = map_event(parse(story.pay("20.00", kind="refunded")[0]), state)
    voids = [c for c in calls if c.kind == "omneo.transaction.upsert"]
    assert len(voids) == 2
    assert all(c.body is not None and c.body["is_void"] is True for c in voids)


def test_redelivery_is_a_no_op_and_batches_coalesce() -> None:
    story = OrderStory()
    story.place()
    story.pay("20.00")
    story.ship("S1", "L1")
    state = _delivered(story)
    assert map_event(parse(story.envelopes[-1]), state) == []
    envs = [parse(e) for e in story.envelopes]
    calls = map_batch(envs, OmneoState())
    assert [c.kind for c in calls] == ["omneo.order.create", "omneo.transaction.upsert"]


def test_cancel_and_delete() -> None:
    story = OrderStory()
    story.place()
    state = _delivered(story)
    cancel = map_event(parse(story.cancel()[0]), state)
    assert [(c.method, c.body) for c in cancel] == [("PUT", {"status": "cancelled"})]
    deleted = map_event(parse(story.delete()[0]), state)
    assert [(c.method, c.path) for c in deleted] == [("DELETE", f"/api/v3/orders/{REMOTE_ID}")]
    assert map_event(parse(story.envelopes[-1]), OmneoState()) == []


def test_a_shipment_without_a_location_takes_the_default_location_as_a_string() -> None:
    story = OrderStory()
    story.place()
    story.pay("20.00")
    env = parse(story.ship("S1", "L1", "L2", location=None)[0])
    bare = [c for c in map_event(env, OmneoState("1001")) if c.kind == "omneo.transaction.upsert"]
    assert bare[0].body is not None
    assert "location_id" not in bare[0].body
    calls = map_event(env, OmneoState("1001"), OmneoOptions(default_location_id="online"))
    (tx,) = [c for c in calls if c.kind == "omneo.transaction.upsert"]
    assert tx.body is not None
    assert tx.body["location_id"] == "online"


def test_a_transaction_without_a_profile_uuid_is_identified_by_the_customer_s_email() -> None:
    story = OrderStory()
    story.place(profile_id=None)
    story.pay("20.00")
    calls = map_event(parse(story.ship("S1", "L1", "L2")[0]), OmneoState("1001"))
    (tx,) = [c for c in calls if c.kind == "omneo.transaction.upsert"]
    assert tx.body is not None
    assert (tx.body["profile_id"], tx.body["profile_id_handle"]) == ("ann@example.com", "email")
    with_uuid = OrderStory()
    with_uuid.place()
    with_uuid.pay("20.00")
    calls = map_event(parse(with_uuid.ship("S1", "L1", "L2")[0]), OmneoState("1001"))
    (tx,) = [c for c in calls if c.kind == "omneo.transaction.upsert"]
    assert tx.body is not None
    assert "profile_id_handle" not in tx.body

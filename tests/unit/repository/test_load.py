"""`ledger.repository`: one load-and-fold path, on the in-memory store (PostgreSQL runs it
through the service's, the audit CLI's and the fan-out's integration tests)."""

from __future__ import annotations

import uuid

from ledger.api.app import event_registry
from ledger.domain import UpdateOrder
from ledger.repository import fold_steps, load, load_many
from ledger.service import Actor, OrderService, RequestMeta
from ledger.store import InMemoryEventStore
from ledger_kernel.wire.streams import stream_id_of
from tests.unit.service.test_order_service import place

ACTOR = Actor("checkout", "shop-a")
META = RequestMeta(source="tests", request_id="req-1", route="POST /orders")


async def two_versions(store: InMemoryEventStore) -> uuid.UUID:
    svc = OrderService(store)
    placed = await svc.handle(
        place(), order_id=None, expected_version=None, actor=ACTOR, idempotency_key=None, meta=META
    )
    await svc.handle(
        UpdateOrder(status="processing"),
        order_id=placed.order_id,
        expected_version=None,
        actor=ACTOR,
        idempotency_key=None,
        meta=META,
    )
    return placed.order_id


async def test_load_gives_the_order_at_a_version_or_a_time_and_none_for_no_events() -> None:
    store = InMemoryEventStore(event_registry())
    order_id = await two_versions(store)
    rows = await store.read_stream(stream_id_of(order_id))
    first = await load(store, order_id, to_version=1)
    at_first = await load(store, order_id, as_of=rows[0].recorded_at)
    latest = await load(store, order_id)
    assert first is not None
    assert at_first is not None
    assert latest is not None
    assert (first.status, at_first.version, latest.status, latest.version) == ("pending", 1, "processing", 2)
    assert await load(store, uuid.uuid4()) is None


async def test_load_many_and_fold_steps_agree_with_load() -> None:
    store = InMemoryEventStore(event_registry())
    order_id = await two_versions(store)
    missing = uuid.uuid4()
    many = await load_many(store, [order_id, missing])
    assert many == {order_id: await load(store, order_id), missing: None}
    steps = list(fold_steps(await store.read_stream(stream_id_of(order_id))))
    assert [(row.version, state.version) for row, state in steps] == [(1, 1), (2, 2)]
    assert steps[-1][1] == many[order_id]

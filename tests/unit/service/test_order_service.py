"""`OrderService` on the in-memory store: the command steps without PostgreSQL.

Load, decide, append; idempotency claims and replays; If-Match; the lost-race retry; the
external-id rule (pre-check and the store's own refusal); the message-size guard.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from ledger.api.app import event_registry
from ledger.domain.commands import DeleteOrder, PlaceOrder, UpdateOrder
from ledger.service import (
    Actor,
    Change,
    CommandResult,
    DuplicateExternalId,
    IdempotencyInProgress,
    IdempotencyMismatch,
    OrderGone,
    OrderNotFound,
    OrderService,
    OrderTooLarge,
    RequestMeta,
    VersionConflict,
    order_document,
)
from ledger.store import AppendResult, ExpectedVersion, IdempotencyRequest, InMemoryEventStore, NewEvent
from ledger_kernel.wire.codec import parse_json
from ledger_kernel.wire.streams import stream_id_of

ACTOR = Actor("checkout", "shop-a")
META = RequestMeta(source="tests", request_id="req-1", route="POST /orders")


def place(external_id: str | None = None, total: str = "10.00") -> PlaceOrder:
    item = {
        "name": "Scarf",
        "quantity": 1,
        "price_current": total,
        "price_sell": total,
        "price_original": total,
    }
    return PlaceOrder.model_validate(
        {"external_id": external_id, "status": "pending", "total": Decimal(total), "items": [item]}
    )


def service(store: InMemoryEventStore | None = None, **kwargs: Any) -> OrderService:
    return OrderService(store or InMemoryEventStore(event_registry()), **kwargs)


async def run(
    svc: OrderService, command: Any, order_id: uuid.UUID | None = None, **kwargs: Any
) -> CommandResult:
    options: dict[str, Any] = {"expected_version": None, "idempotency_key": None, **kwargs}
    return await svc.handle(command, order_id=order_id, actor=ACTOR, meta=META, **options)


async def test_placing_appends_one_event_and_returns_the_created_order_and_its_document() -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)  # one clock for the service and the store
    svc = service(InMemoryEventStore(event_registry(), clock=lambda: at), clock=lambda: at)
    result = await run(svc, place())
    assert (result.change, result.version, result.appended, result.replayed) == (Change.CREATED, 1, 1, False)
    assert result.order is not None
    assert (result.order.id, result.order.version, result.order.source) == (result.order_id, 1, "shop-a")
    assert result.document == order_document(result.order)
    view = parse_json(result.document)["data"]
    assert (view["id"], view["source"]) == (str(result.order_id), "shop-a")
    loaded = await svc.load(result.order_id)
    assert loaded == result.order


async def test_an_update_returns_updated_with_the_order_after_it() -> None:
    svc = service()
    placed = await run(svc, place())
    updated = await run(svc, UpdateOrder(status="processing"), placed.order_id)
    assert (updated.change, updated.version, updated.appended) == (Change.UPDATED, 2, 1)
    assert updated.order is not None
    assert updated.order.status == "processing"


async def test_a_keyed_retry_replays_the_stored_answer_byte_for_byte_without_appending() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store)
    first = await run(svc, place(), idempotency_key="key-0001")
    again = await run(svc, place(), idempotency_key="key-0001")
    assert (again.replayed, again.change, again.version, again.appended) == (True, Change.CREATED, 1, 0)
    assert (again.document, again.order_id, again.order) == (first.document, first.order_id, None)
    assert await store.stream_version(stream_id_of(first.order_id)) == 1


async def test_an_answer_stored_in_the_old_form_replays_with_its_status_and_bytes() -> None:
    body = '{"data":{"id":"stored before the result type"}}'
    order_id = uuid.uuid4()
    stored = {"status": 201, "body": body, "order_id": str(order_id), "version": 3}
    result = CommandResult.from_stored(stored)
    assert (result.change, result.order_id, result.version, result.replayed) == (Change.CREATED, order_id, 3, True)
    assert result.document == body.encode()
    assert result.to_stored() == stored
    updated = CommandResult.from_stored({**stored, "status": 200})
    assert (updated.change, updated.to_stored()["status"]) == (Change.UPDATED, 200)


async def test_a_key_reused_for_another_command_is_a_mismatch() -> None:
    svc = service()
    await run(svc, place(), idempotency_key="key-0002")
    with pytest.raises(IdempotencyMismatch):
        await run(svc, place(total="11.00"), idempotency_key="key-0002")


async def test_a_key_in_flight_elsewhere_is_refused_as_in_progress_and_freed_after() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store)
    holder = uuid.uuid4()
    await store.claim_idempotency("shop-a", "key-0003", holder, 60.0)
    with pytest.raises(IdempotencyInProgress):
        await run(svc, place(), idempotency_key="key-0003")
    await store.release_idempotency("shop-a", "key-0003", holder)
    result = await run(svc, place(), idempotency_key="key-0003")
    assert result.change is Change.CREATED
    assert (await store.claim_idempotency("shop-a", "key-0003", uuid.uuid4(), 60.0)).outcome is not None


async def test_if_match_at_another_version_is_a_conflict_and_appends_nothing() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store)
    placed = await run(svc, place())
    with pytest.raises(VersionConflict) as raised:
        await run(svc, UpdateOrder(status="processing"), placed.order_id, expected_version=3)
    assert raised.value.current_version == 1
    assert await store.stream_version(stream_id_of(placed.order_id)) == 1


class RacingStore(InMemoryEventStore):
    """Another writer appends to the stream just before this store's next append, once."""

    racing = True

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion,
        *,
        idempotency: IdempotencyRequest | None = None,
    ) -> AppendResult:
        if self.racing and int(expected_version) > 0:
            self.racing = False
            await super().append(
                stream_id, [NewEvent("OrderStatusChanged", {"status": "racer"})], expected_version
            )
        return await super().append(stream_id, events, expected_version, idempotency=idempotency)


async def test_without_if_match_a_lost_race_is_retried_on_the_new_version() -> None:
    store = RacingStore(event_registry())
    svc = service(store)
    placed = await run(svc, place())
    updated = await run(svc, UpdateOrder(status="processing"), placed.order_id)
    assert (updated.change, updated.version) == (Change.UPDATED, 3)
    assert not store.racing


async def test_with_if_match_a_lost_race_is_the_clients_conflict() -> None:
    store = RacingStore(event_registry())
    svc = service(store)
    placed = await run(svc, place())
    with pytest.raises(VersionConflict):
        await run(svc, UpdateOrder(status="processing"), placed.order_id, expected_version=1)


async def test_an_unknown_order_is_not_found_and_a_deleted_one_is_gone() -> None:
    svc = service()
    with pytest.raises(OrderNotFound):
        await run(svc, UpdateOrder(status="processing"), uuid.uuid4())
    placed = await run(svc, place())
    await run(svc, DeleteOrder(), placed.order_id)
    with pytest.raises(OrderGone):
        await run(svc, UpdateOrder(status="processing"), placed.order_id)


async def test_a_no_op_update_returns_unchanged_and_appends_nothing() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store)
    placed = await run(svc, place())
    same = await run(svc, UpdateOrder(total=Decimal("10.00")), placed.order_id)
    assert (same.change, same.version, same.appended) == (Change.UNCHANGED, 1, 0)
    assert same.order == await svc.load(placed.order_id)
    assert await store.stream_version(stream_id_of(placed.order_id)) == 1


async def test_an_external_id_taken_by_another_order_is_a_duplicate() -> None:
    svc = service()
    first = await run(svc, place("CART-9"))
    with pytest.raises(DuplicateExternalId) as raised:
        await run(svc, place("CART-9"))
    assert raised.value.existing_order_id == str(first.order_id)


async def test_a_concurrent_placement_with_the_same_external_id_is_refused_by_the_store() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store)

    async def nobody_yet(source: str, external_id: str) -> str | None:
        return None  # both requests passed the fast pre-check before either appended

    store.external_id_owner = nobody_yet  # type: ignore[method-assign]
    first = await run(svc, place("CART-10"))
    with pytest.raises(DuplicateExternalId) as raised:
        await run(svc, place("CART-10"))
    assert raised.value.existing_order_id == str(first.order_id)


async def test_a_fresh_placement_asks_no_external_id_lookup_and_the_append_still_refuses_a_duplicate() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store)
    lookups: list[str] = []
    real_lookup = store.external_id_owner

    async def counted(source: str, external_id: str) -> str | None:
        lookups.append(external_id)
        return await real_lookup(source, external_id)

    store.external_id_owner = counted  # type: ignore[method-assign]
    first = await run(svc, place("CART-11"))
    with pytest.raises(DuplicateExternalId) as raised:
        await run(svc, place("CART-11"))
    assert raised.value.existing_order_id == str(first.order_id)
    assert lookups == []
    keyed = await run(svc, place("CART-12"), idempotency_key="key-cart-12-abc")
    assert (keyed.change, lookups) == (Change.CREATED, ["CART-12"])


async def test_an_order_too_large_for_one_events_message_is_refused_before_appending() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store, max_message_bytes=2048)
    with pytest.raises(OrderTooLarge):
        await run(svc, place())
    assert await store.read_events() == []


async def test_load_folds_the_order_as_of_a_version() -> None:
    svc = service()
    placed = await run(svc, place())
    await run(svc, UpdateOrder(status="processing"), placed.order_id)
    first = await svc.load(placed.order_id, to_version=1)
    now = await svc.load(placed.order_id)
    assert first is not None
    assert now is not None
    assert (first.version, now.version) == (1, 2)
    assert (first.status, now.status) == ("pending", "processing")


async def test_concurrent_identical_keyed_requests_append_once() -> None:
    store = InMemoryEventStore(event_registry())
    svc = service(store)
    results = await asyncio.gather(
        *(run(svc, place(), idempotency_key="key-0004") for _ in range(5)), return_exceptions=True
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    assert done
    assert all(isinstance(r, IdempotencyInProgress) for r in results if isinstance(r, BaseException))
    assert await store.stream_version(stream_id_of(done[0].order_id)) == 1

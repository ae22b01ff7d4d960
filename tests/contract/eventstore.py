"""The contract every `EventStoreProtocol` implementation honours, written once.

`EventStoreContract` is subclassed per implementation with a `contract_store` fixture: the
in-memory store in `tests/unit/store`, PostgreSQL in `tests/integration/store`. Each test
names one promise of `ledger.store.protocol.EventStoreProtocol`; both stores must keep it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import ClassVar, Literal

import pytest
from pydantic import BaseModel

from ledger.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyConflict,
    DuplicateEventId,
    EventRegistry,
    EventStoreProtocol,
    ExternalIdTaken,
    IdempotencyKeyReused,
    IdempotencyRequest,
    InvalidStreamId,
    NewEvent,
    UnknownEventType,
)


class Noted(BaseModel):
    type: Literal["Noted"] = "Noted"
    schema_version: ClassVar[int] = 1
    text: str


class OrderPlaced(BaseModel):
    """Only what migration 0021's external-id rule reads of the real event."""

    type: Literal["OrderPlaced"] = "OrderPlaced"
    schema_version: ClassVar[int] = 1
    source: str = ""
    external_id: str | None = None


def contract_registry() -> EventRegistry:
    """The events the contract appends (the store is generic: no domain needed)."""
    return EventRegistry([Noted, OrderPlaced])


def new_stream() -> str:
    return f"order-{uuid.uuid4()}"


def noted(text: str = "hello", *, event_id: uuid.UUID | None = None) -> NewEvent:
    metadata = {"actor": "tester", "source": "tests"}
    if event_id is None:
        return NewEvent("Noted", {"text": text}, metadata)
    return NewEvent("Noted", {"text": text}, metadata, event_id=event_id)


def placed(external_id: str, source: str = "shop") -> NewEvent:
    return NewEvent("OrderPlaced", {"source": source, "external_id": external_id}, {"actor": "tester"})


def key(fingerprint: str = "fp-1", name: str = "key-0001") -> IdempotencyRequest:
    return IdempotencyRequest("shop-a", name, fingerprint, {"status": 201, "version": 1, "body": "{}"})


class EventStoreContract:
    """Tests shared by every store; a subclass provides the `contract_store` fixture."""

    async def test_append_at_the_expected_version_numbers_events_from_one(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        first = await contract_store.append(stream, [noted("a"), noted("b")], NO_STREAM)
        second = await contract_store.append(stream, [noted("c")], 2)
        assert (first.version, second.version, first.replayed) == (2, 3, False)
        rows = await contract_store.read_stream(stream)
        assert [(r.version, r.data["text"]) for r in rows] == [(1, "a"), (2, "b"), (3, "c")]
        assert await contract_store.stream_version(stream) == 3
        assert await contract_store.stream_version(new_stream()) == 0

    async def test_append_at_a_stale_version_conflicts_and_writes_nothing(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        await contract_store.append(stream, [noted()], NO_STREAM)
        with pytest.raises(ConcurrencyConflict) as raised:
            await contract_store.append(stream, [noted(), noted()], NO_STREAM)
        assert raised.value.current_version == 1
        with pytest.raises(ConcurrencyConflict):
            await contract_store.append(new_stream(), [noted()], STREAM_EXISTS)
        assert await contract_store.stream_version(stream) == 1

    async def test_concurrent_appends_at_one_version_let_exactly_one_win(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        outcomes = await asyncio.gather(
            *(contract_store.append(stream, [noted(str(i))], NO_STREAM) for i in range(10)),
            return_exceptions=True,
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
        assert all(isinstance(o, ConcurrencyConflict) for o in outcomes if isinstance(o, BaseException))
        assert await contract_store.stream_version(stream) == 1

    async def test_any_appends_after_whatever_is_there(self, contract_store: EventStoreProtocol) -> None:
        stream = new_stream()
        await contract_store.append(stream, [noted()], ANY)
        result = await contract_store.append(stream, [noted()], ANY)
        assert result.version == 2

    async def test_reappending_the_same_event_ids_is_a_replay(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        event = noted("same", event_id=uuid.uuid4())
        await contract_store.append(stream, [event], NO_STREAM)
        again = await contract_store.append(stream, [event], NO_STREAM)
        assert (again.replayed, again.version) == (True, 1)
        assert await contract_store.stream_version(stream) == 1

    async def test_an_event_id_with_other_content_is_refused(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        event_id = uuid.uuid4()
        await contract_store.append(stream, [noted("one", event_id=event_id)], NO_STREAM)
        with pytest.raises(DuplicateEventId):
            await contract_store.append(stream, [noted("two", event_id=event_id)], NO_STREAM)
        with pytest.raises(DuplicateEventId):
            await contract_store.append(new_stream(), [noted("one", event_id=event_id)], NO_STREAM)

    async def test_bad_input_is_refused_before_writing(self, contract_store: EventStoreProtocol) -> None:
        with pytest.raises(InvalidStreamId):
            await contract_store.append("not a stream id", [noted()], NO_STREAM)
        stream = new_stream()
        with pytest.raises(UnknownEventType):
            await contract_store.append(stream, [NewEvent("Unheard", {})], NO_STREAM)
        assert await contract_store.stream_version(stream) == 0

    async def test_an_idempotency_key_replays_its_stored_outcome(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        first = await contract_store.append(stream, [noted()], NO_STREAM, idempotency=key())
        retry = await contract_store.append(stream, [noted()], NO_STREAM, idempotency=key())
        assert not first.replayed
        assert (retry.replayed, retry.version, retry.outcome) == (True, 1, dict(key().outcome))
        stored = await contract_store.get_idempotency("shop-a", "key-0001")
        assert stored is not None
        assert (stored.fingerprint, stored.stream_id) == ("fp-1", stream)
        assert await contract_store.stream_version(stream) == 1

    async def test_an_idempotency_key_reused_for_another_request_is_refused(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        await contract_store.append(stream, [noted()], NO_STREAM, idempotency=key())
        with pytest.raises(IdempotencyKeyReused):
            await contract_store.append(new_stream(), [noted()], NO_STREAM, idempotency=key("fp-2"))

    async def test_an_in_flight_claim_holds_off_a_second_claim_until_released(
        self, contract_store: EventStoreProtocol
    ) -> None:
        first, second = uuid.uuid4(), uuid.uuid4()
        claimed = await contract_store.claim_idempotency("shop-a", "key-claim", first, 60.0)
        blocked = await contract_store.claim_idempotency("shop-a", "key-claim", second, 60.0)
        assert (claimed.claimed, blocked.claimed, blocked.outcome) == (True, False, None)
        await contract_store.release_idempotency("shop-a", "key-claim", second)  # not its claim: no-op
        assert not (await contract_store.claim_idempotency("shop-a", "key-claim", second, 60.0)).claimed
        await contract_store.release_idempotency("shop-a", "key-claim", first)
        assert (await contract_store.claim_idempotency("shop-a", "key-claim", second, 60.0)).claimed

    async def test_a_stale_claim_is_taken_over(self, contract_store: EventStoreProtocol) -> None:
        await contract_store.claim_idempotency("shop-a", "key-stale", uuid.uuid4(), 60.0)
        taken = await contract_store.claim_idempotency("shop-a", "key-stale", uuid.uuid4(), -1.0)
        assert taken.claimed

    async def test_a_claim_on_an_answered_key_returns_the_answer(
        self, contract_store: EventStoreProtocol
    ) -> None:
        await contract_store.append(new_stream(), [noted()], NO_STREAM, idempotency=key(name="key-done"))
        answer = await contract_store.claim_idempotency("shop-a", "key-done", uuid.uuid4(), 60.0)
        assert (answer.claimed, answer.fingerprint, answer.outcome) == (False, "fp-1", dict(key().outcome))

    async def test_pruning_drops_keys_older_than_the_ttl_only(
        self, contract_store: EventStoreProtocol
    ) -> None:
        await contract_store.append(new_stream(), [noted()], NO_STREAM, idempotency=key(name="key-prune"))
        assert await contract_store.prune_idempotency(timedelta(hours=1)) == 0
        assert await contract_store.get_idempotency("shop-a", "key-prune") is not None

    async def test_an_external_id_belongs_to_one_stream_per_source(
        self, contract_store: EventStoreProtocol
    ) -> None:
        external = f"ext-{uuid.uuid4()}"
        owner = new_stream()
        await contract_store.append(owner, [placed(external)], NO_STREAM)
        assert await contract_store.external_id_owner("shop", external) == owner
        assert await contract_store.external_id_owner("other", external) is None
        other = new_stream()
        with pytest.raises(ExternalIdTaken) as raised:
            await contract_store.append(other, [placed(external)], NO_STREAM)
        assert raised.value.existing_stream_id == owner
        assert await contract_store.stream_version(other) == 0
        await contract_store.append(new_stream(), [placed(external, source="other")], NO_STREAM)

    async def test_a_stream_reads_up_to_a_version_or_a_time(self, contract_store: EventStoreProtocol) -> None:
        stream = new_stream()
        await contract_store.append(stream, [noted("a")], NO_STREAM)
        await contract_store.append(stream, [noted("b")], 1)
        rows = await contract_store.read_stream(stream)
        assert [r.data["text"] for r in await contract_store.read_stream(stream, 1, 1)] == ["a"]
        assert [r.data["text"] for r in await contract_store.read_stream(stream, 2)] == ["b"]
        before = rows[0].recorded_at - timedelta(microseconds=1)
        assert await contract_store.read_stream(stream, as_of=before) == []
        assert len(await contract_store.read_stream(stream, as_of=rows[-1].recorded_at)) == 2
        assert rows[1].prev_hash == rows[0].hash

    async def test_the_audit_feed_filters_by_stream_and_actor(
        self, contract_store: EventStoreProtocol
    ) -> None:
        stream = new_stream()
        await contract_store.append(stream, [noted("a"), noted("b")], NO_STREAM)
        for _ in range(200):  # PostgreSQL: read through the xid8 fence, which another writer may hold
            rows = await contract_store.read_events(stream_id=stream, actor="tester")
            if len(rows) == 2:
                break
            await asyncio.sleep(0.05)
        assert [r.data["text"] for r in rows] == ["a", "b"]
        assert await contract_store.read_events(stream_id=stream, actor="somebody else") == []
        page = await contract_store.read_events(stream_id=stream, limit=1)
        assert [
            r.data["text"]
            for r in await contract_store.read_events(stream_id=stream, after=page[0].checkpoint)
        ] == ["b"]

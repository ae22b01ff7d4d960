"""Appends: expected versions, optimistic concurrency, event-id dedupe, bad input, hash chain."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import timedelta

import asyncpg
import pytest

from ledger.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    ConcurrencyConflict,
    Connection,
    DuplicateEventId,
    EventStore,
    EventTooLarge,
    InvalidAppend,
    InvalidEventData,
    InvalidEventId,
    InvalidInput,
    InvalidStreamId,
    NewEvent,
    UnknownEventType,
)
from tests.integration.store.sample_events import (
    ItemAdded,
    Noted,
    item,
    new_stream,
    noted,
    wait_through_fence,
)

pytestmark = pytest.mark.postgres

# Parametrize ids must be the same in every xdist worker, so no random ids in parameters.
GOOD_STREAM = "order-5f0c2a9e-3b1d-4c7e-9a44-0d2b8e6f1a37"  # fixed: xdist workers must collect identical ids


async def test_append_and_read_back(store: EventStore) -> None:
    stream = new_stream()
    events = [item("A", 2), noted("x"), item("B", 1)]
    result = await store.append(stream, events, NO_STREAM)
    assert (result.version, len(result.positions), result.replayed) == (3, 3, False)
    recorded = await store.read_stream(stream)
    assert [e.version for e in recorded] == [1, 2, 3]
    assert [e.event_id for e in recorded] == [e.event_id for e in events]
    assert [e.position for e in recorded] == list(result.positions)
    assert {e.tx for e in recorded} == {result.tx}
    assert recorded[0].data == {"sku": "A", "quantity": 2}
    assert recorded[0].schema_version == 2
    assert recorded[1].metadata == {"actor": "tester", "source": "tests"}
    assert store.decode(recorded[0]) == ItemAdded(sku="A", quantity=2)
    assert await store.stream_version(stream) == 3
    assert [e.version for e in await store.read_stream(stream, from_version=2, to_version=2)] == [2]


async def test_expected_versions(store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(ConcurrencyConflict) as missing:
        await store.append(stream, [noted()], STREAM_EXISTS)
    assert missing.value.current_version == 0
    with pytest.raises(ConcurrencyConflict):
        await store.append(stream, [noted()], 1)
    assert (await store.append(stream, [noted()], ANY)).version == 1
    with pytest.raises(ConcurrencyConflict) as exists:
        await store.append(stream, [noted()], NO_STREAM)
    assert (exists.value.stream_id, exists.value.expected, exists.value.current_version) == (
        stream,
        NO_STREAM,
        1,
    )
    assert (await store.append(stream, [noted()], STREAM_EXISTS)).version == 2
    assert (await store.append(stream, [noted(), noted()], 2)).version == 4


async def test_twenty_writers_at_one_version_exactly_one_wins(store: EventStore) -> None:
    stream = new_stream()
    for version in range(8):
        outcomes = await asyncio.gather(
            *(store.append(stream, [noted(f"w{w}")], version) for w in range(20)), return_exceptions=True
        )
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(wins) == 1
        assert wins[0].version == version + 1
        assert all(isinstance(o, ConcurrencyConflict) and o.current_version == version + 1 for o in losses)
    recorded = await store.read_stream(stream)
    assert [e.version for e in recorded] == list(range(1, 9))


async def test_concurrent_any_appends_are_all_kept_contiguously(store: EventStore) -> None:
    stream = new_stream()
    results = await asyncio.gather(*(store.append(stream, [noted(), noted()], ANY) for _ in range(16)))
    assert sorted(r.version for r in results) == list(range(2, 33, 2))
    assert [e.version for e in await store.read_stream(stream)] == list(range(1, 33))


async def test_reappending_existing_event_ids_is_a_noop(store: EventStore) -> None:
    stream = new_stream()
    events = [item("A"), item("B")]
    first = await store.append(stream, events, NO_STREAM)
    again_exact = await store.append(stream, events, NO_STREAM)
    again_any = await store.append(stream, events, ANY)
    for again in (again_exact, again_any):
        assert again.replayed
        assert (again.version, again.positions, again.tx) == (first.version, first.positions, first.tx)
    assert await store.stream_version(stream) == 2
    same = noted("sent ten times at once")
    results = await asyncio.gather(*(store.append(stream, [same], ANY) for _ in range(10)))
    assert sum(not r.replayed for r in results) == 1
    assert {(r.version, r.positions) for r in results} == {(3, results[0].positions)}
    assert await store.stream_version(stream) == 3


async def test_same_event_id_with_other_content_or_stream_is_rejected(store: EventStore) -> None:
    stream = new_stream()
    event = item("A", 1)
    await store.append(stream, [event], NO_STREAM)
    changed = NewEvent("ItemAdded", {"sku": "A", "quantity": 2}, event_id=event.event_id)
    with pytest.raises(DuplicateEventId):
        await store.append(stream, [changed], ANY)
    with pytest.raises(DuplicateEventId):
        await store.append(stream, [changed], 1)
    with pytest.raises(DuplicateEventId):
        await store.append(new_stream(), [event], NO_STREAM)
    with pytest.raises(DuplicateEventId):
        await store.append(stream, [event, noted()], ANY)
    assert await store.stream_version(stream) == 1


@pytest.mark.parametrize(
    ("stream_id", "events", "expected", "error"),
    [
        ("order-123", [noted()], NO_STREAM, InvalidStreamId),
        ("Order-" + GOOD_STREAM[6:], [noted()], NO_STREAM, InvalidStreamId),
        (GOOD_STREAM + "\x00", [noted()], NO_STREAM, InvalidStreamId),
        (None, [noted()], NO_STREAM, InvalidStreamId),
        (GOOD_STREAM, [], NO_STREAM, InvalidAppend),
        (GOOD_STREAM, [noted()], -5, InvalidAppend),
        (GOOD_STREAM, [noted()], True, InvalidAppend),
        (GOOD_STREAM, [NewEvent("Nope", {})], NO_STREAM, UnknownEventType),
        (GOOD_STREAM, [NewEvent("Noted", {"text": "a\x00b"})], NO_STREAM, InvalidEventData),
        (GOOD_STREAM, [NewEvent("Noted", {"k\x00": 1})], NO_STREAM, InvalidEventData),
        (
            GOOD_STREAM,
            [NewEvent("Noted", {}, {"actor": ["\x00"]})],
            NO_STREAM,
            InvalidEventData,
        ),
        (GOOD_STREAM, [NewEvent("Noted", {"type": "Noted"})], NO_STREAM, InvalidEventData),
        (GOOD_STREAM, [NewEvent("Noted", {"x": {1, 2}})], NO_STREAM, InvalidEventData),
        (GOOD_STREAM, [NewEvent("Noted", {"x": "\ud800"})], NO_STREAM, InvalidEventData),
        (GOOD_STREAM, [NewEvent("Noted", [1])], NO_STREAM, InvalidEventData),  # type: ignore[arg-type]
        (GOOD_STREAM, [NewEvent("Noted", 5)], NO_STREAM, InvalidEventData),  # type: ignore[arg-type]
        (
            GOOD_STREAM,
            [NewEvent("ItemAdded", {}, schema_version=1)],
            NO_STREAM,
            InvalidEventData,
        ),
        (GOOD_STREAM, [NewEvent("Noted", {}, event_id="nope")], NO_STREAM, InvalidEventId),  # type: ignore[arg-type]
        (
            GOOD_STREAM,
            [noted(), NewEvent("Noted", {"x": "y" * (1024 * 1024)})],
            NO_STREAM,
            EventTooLarge,
        ),
        (GOOD_STREAM, [noted()] * 2, NO_STREAM, InvalidEventId),
        (GOOD_STREAM, [noted() for _ in range(1001)], NO_STREAM, InvalidAppend),
    ],
)
async def test_bad_input_is_rejected_and_nothing_written(
    store: EventStore, stream_id: str, events: list[NewEvent], expected: int, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        await store.append(stream_id, events, expected)
    assert isinstance(raised.value, InvalidInput)
    assert str(raised.value)
    assert await store.pool.fetchval("SELECT count(*) FROM events") == 0


async def test_escaped_backslash_u0000_text_is_fine(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, [NewEvent("Noted", {"text": "\\u0000 is six characters"})], NO_STREAM)
    assert (await store.read_stream(stream))[0].data["text"] == "\\u0000 is six characters"


async def test_hash_chain_verifies_and_detects_tampering(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, [item("A"), noted('ü ∑ \n "quoted"')], NO_STREAM)
    await store.append(stream, [noted("three", actor="a", request_id="r")], 2)
    verification = await store.verify_stream(stream)
    assert verification.ok
    assert verification.checked == 3
    recorded = await store.read_stream(stream)
    assert recorded[0].prev_hash is None
    assert [e.prev_hash for e in recorded[1:]] == [e.hash for e in recorded[:-1]]
    async with store.pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE events SET data = '{}' WHERE stream_id = $1", stream)
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(
            "UPDATE events SET data = jsonb_set(data, '{text}', '\"forged\"') WHERE stream_id = $1 AND version = 2",
            stream,
        )
        await conn.execute("RESET session_replication_role")
    tampered = await store.verify_stream(stream)
    assert (tampered.ok, tampered.broken_at_version, tampered.reason) == (
        False,
        2,
        "hash does not match content",
    )


async def test_stored_old_schema_version_is_upcast_on_read(store: EventStore) -> None:
    stream = new_stream()
    await store.pool.execute(
        "INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata, hash)"
        " VALUES ($1, 1, $2, 'ItemAdded', 1, '{\"sku\": \"OLD\", \"qty\": 3}'::jsonb, '{}'::jsonb, $3)",
        stream,
        uuid.uuid4(),
        hashlib.sha256(b"legacy").digest(),
    )
    await store.append(stream, [item("NEW", 1)], 1)
    old, new = await store.read_stream(stream)
    assert (old.schema_version, old.data) == (1, {"sku": "OLD", "qty": 3})
    assert store.decode(old) == ItemAdded(sku="OLD", quantity=3)
    assert store.decode(new) == ItemAdded(sku="NEW", quantity=1)
    assert new.prev_hash == old.hash


async def test_registry_encodes_models(store: EventStore) -> None:
    stream = new_stream()
    event = store.registry.new_event(Noted(text="via model"), {"actor": "me"})
    assert event.data == {"text": "via model"}
    assert event.schema_version == 1
    await store.append(stream, [event], NO_STREAM)
    assert store.decode((await store.read_stream(stream))[0]) == Noted(text="via model")


async def test_read_stream_as_of_time(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, [noted("1")], NO_STREAM)
    first = (await store.read_stream(stream))[0]
    await asyncio.sleep(0.01)
    await store.append(stream, [noted("2")], 1)
    as_of = await store.read_stream(stream, as_of=first.recorded_at + timedelta(microseconds=1))
    assert [e.version for e in as_of] == [1]


async def test_audit_feed_filters_and_pages(store: EventStore) -> None:
    a, b = new_stream(), new_stream()
    await store.append(a, [noted("1", actor="alice", source="api"), item("X")], NO_STREAM)
    await store.append(b, [noted("2", actor="bob", source="kafka")], NO_STREAM)
    await wait_through_fence(store, await store.append(a, [noted("3", actor="alice", source="kafka")], 2))
    assert [e.data["text"] for e in await store.read_events(actor="alice")] == ["1", "3"]
    assert [e.data["text"] for e in await store.read_events(source="kafka")] == ["2", "3"]
    assert len(await store.read_events(types=["ItemAdded"])) == 1
    assert len(await store.read_events(stream_id=a)) == 3
    everything = await store.read_events()
    since = everything[1].recorded_at
    assert [e.position for e in await store.read_events(since=since)] == [e.position for e in everything[1:]]
    assert [e.position for e in await store.read_events(until=since)] == [everything[0].position]
    page1 = await store.read_events(limit=2)
    page2 = await store.read_events(limit=2, after=page1[-1].checkpoint)
    assert [e.position for e in page1 + page2] == [e.position for e in everything]


async def test_checkpoints_are_saved_in_the_callers_transaction(store: EventStore) -> None:
    await wait_through_fence(store, await store.append(new_stream(), [noted()], NO_STREAM))
    [event] = await store.read_all()
    assert await store.load_checkpoint("relay") is None

    async def save_then_fail(conn: Connection) -> None:
        async with conn.transaction():
            await store.save_checkpoint(conn, "relay", event.checkpoint)
            raise RuntimeError("rolled back")

    async with store.pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await save_then_fail(conn)
        assert await store.load_checkpoint("relay") is None
        async with conn.transaction():
            await store.save_checkpoint(conn, "relay", event.checkpoint)
    assert await store.load_checkpoint("relay") == event.checkpoint
    assert await store.events_after(event.checkpoint) == 0


async def test_head_and_fence_status(store: EventStore) -> None:
    result = await store.append(new_stream(), [noted(), noted()], NO_STREAM)
    await wait_through_fence(store, result)
    head = await store.head()
    assert head.position == result.positions[-1]
    assert head.tx == result.tx
    status = await store.fence_status()
    assert status.fence_xmin > 0
    assert status.pending_events >= 0
    assert status.oldest_writer_age_s >= 0

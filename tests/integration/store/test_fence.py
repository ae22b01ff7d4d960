"""The xid8 fence: fenced readers never skip a late commit, and per-stream order holds.

A BEFORE INSERT trigger blocks appends whose metadata says `hold` on an advisory lock the test
holds: such an append has its xid and position (both column defaults are evaluated before the
trigger) but cannot commit, exactly the late-commit case that makes `position > last` readers
skip events.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict

import asyncpg
import pytest

from ledger.store import (
    ANY,
    NO_STREAM,
    START,
    Checkpoint,
    ConcurrencyConflict,
    EventStore,
    NewEvent,
    RecordedEvent,
)
from tests.integration.store.sample_events import new_stream, noted, wait_through_fence

pytestmark = pytest.mark.postgres

HOLD_LOCK = 4242

_TRIGGERS = f"""
CREATE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.metadata ? 'hold' THEN
        PERFORM pg_advisory_xact_lock_shared({HOLD_LOCK});
    END IF;
    IF NEW.metadata ? 'sleep_ms' THEN
        PERFORM pg_sleep((NEW.metadata->>'sleep_ms')::float / 1000);
    END IF;
    IF NEW.metadata ? 'fail' THEN
        RAISE EXCEPTION 'injected rollback';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_hold();
"""


async def _wait_until_blocked(pool: asyncpg.Pool) -> None:
    async with asyncio.timeout(10):
        while not await pool.fetchval(  # noqa: ASYNC110 (polls database state)
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = $1",
            HOLD_LOCK,
        ):
            await asyncio.sleep(0.01)


async def _drain(store: EventStore, after: Checkpoint) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    while batch := await store.read_all(after, limit=3):
        out += batch
        after = batch[-1].checkpoint
    return out


async def test_readers_never_pass_an_open_append(store: EventStore, database_url: str) -> None:
    await store.pool.execute(_TRIGGERS)
    before = await store.append(new_stream(), [noted("before")], NO_STREAM)
    await wait_through_fence(store, before)
    locker = await asyncpg.connect(database_url)
    await locker.execute("SELECT pg_advisory_lock($1)", HOLD_LOCK)
    held_stream = new_stream()
    held = asyncio.create_task(
        store.append(held_stream, [NewEvent("Noted", {"text": "held"}, {"hold": 1})], NO_STREAM)
    )
    subscribed: list[RecordedEvent] = []

    async def follow() -> None:
        async with contextlib.aclosing(store.subscribe(START, batch_size=2, poll_interval_s=0.02)) as batches:
            async for batch in batches:
                subscribed.extend(batch)

    follower = asyncio.create_task(follow())
    try:
        await _wait_until_blocked(store.pool)
        later = [await store.append(new_stream(), [noted(f"later {i}")], NO_STREAM) for i in range(5)]
        await asyncio.sleep(0.3)
        assert [e.data["text"] for e in await _drain(store, START)] == ["before"]
        assert [e.data["text"] for e in subscribed] == ["before"]
        assert await store.events_after(before_checkpoint := (await _drain(store, START))[-1].checkpoint) == 5
        status = await store.fence_status()
        assert status.pending_events >= 5
        assert status.oldest_writer_age_s > 0.2
    finally:
        await locker.execute("SELECT pg_advisory_unlock($1)", HOLD_LOCK)
        await locker.close()
    held_result = await held
    assert held_result.positions[0] < later[0].positions[0]
    await wait_through_fence(store, later[-1])
    expected = ["before", "held"] + [f"later {i}" for i in range(5)]
    assert [e.data["text"] for e in await _drain(store, START)] == expected
    assert [e.data["text"] for e in await _drain(store, before_checkpoint)] == expected[1:]
    async with asyncio.timeout(10):
        while len(subscribed) < len(expected):  # noqa: ASYNC110 (fed by another task)
            await asyncio.sleep(0.01)
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    assert [e.data["text"] for e in subscribed] == expected


async def test_iter_all_pages_through_a_cursor(store: EventStore) -> None:
    results = [
        await store.append(new_stream(), [noted(str(i)) for i in range(7)], NO_STREAM) for _ in range(3)
    ]
    await wait_through_fence(store, results[-1])
    pages = [page async for page in store.iter_all(page_size=5)]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 1]
    assert [e.position for p in pages for e in p] == [p for r in results for p in r.positions]
    first_tx = results[0].tx
    assert first_tx is not None
    raw = [page async for page in store.iter_all_raw(Checkpoint(first_tx, results[0].positions[-1]))]
    assert [row["data"] for p in raw for row in p][:1] == ['{"text": "0"}']
    noted_only = [page async for page in store.iter_all(types=["ItemAdded"])]
    assert noted_only == []


async def test_concurrent_writers_with_rollbacks_fenced_reader_misses_nothing(store: EventStore) -> None:
    """16 writers, ~2% injected rollbacks, random time inside the insert, contended streams
    appended with ANY and with read-then-exact-version retries: a concurrent fenced reader sees
    every committed event exactly once, and each stream's versions in (tx, position) order."""
    await store.pool.execute(_TRIGGERS)
    rng = random.Random(20240611)
    shared = [new_stream() for _ in range(4)]
    committed: set[object] = set()
    plans = [
        [
            (rng.random() < 0.02, rng.choice([0, 0, 1, 2, 5]), rng.random() < 0.5, rng.randint(1, 3))
            for _ in range(25)
        ]
        for _ in range(16)
    ]
    done = asyncio.Event()

    async def writer(w: int) -> None:
        own = new_stream()
        own_version = 0
        for fail, sleep_ms, to_shared, count in plans[w]:
            meta: dict[str, object] = {"writer": w, "sleep_ms": sleep_ms}
            if fail:
                meta["fail"] = True
            events = [NewEvent("Noted", {"text": f"{w}"}, meta) for _ in range(count)]
            stream = shared[w % 4] if to_shared else own
            try:
                if not to_shared:
                    result = await store.append(stream, events, own_version)
                elif w % 2:
                    result = await store.append(stream, events, ANY)
                else:  # read, decide, append at that version; retry on conflict
                    expected = await store.stream_version(stream)
                    while True:
                        try:
                            result = await store.append(stream, events, expected)
                            break
                        except ConcurrencyConflict as conflict:
                            expected = conflict.current_version
            except asyncpg.RaiseError:
                assert fail
                continue
            assert not fail
            if not to_shared:
                own_version = result.version
            committed.update(e.event_id for e in events)

    seen: list[RecordedEvent] = []

    async def reader() -> None:
        after = START
        while True:
            finished = done.is_set()
            batch = await store.read_all(after, limit=50)
            seen.extend(batch)
            if batch:
                after = batch[-1].checkpoint
            elif finished and await store.events_after(after) == 0:
                return
            else:
                await asyncio.sleep(0.002)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(16)))
    done.set()
    async with asyncio.timeout(30):
        await reading
    ids = [e.event_id for e in seen]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert set(ids) == committed
    assert await store.pool.fetchval("SELECT count(*) FROM events") == len(committed)
    assert [(e.tx, e.position) for e in seen] == sorted((e.tx, e.position) for e in seen)
    versions: dict[str, list[int]] = defaultdict(list)
    for event in seen:
        versions[event.stream_id].append(event.version)
    for stream, stream_versions in versions.items():
        assert stream_versions == list(range(1, len(stream_versions) + 1)), stream


async def test_tx_order_equals_version_order_under_contention(store: EventStore) -> None:
    """Writers race on two streams, half with ANY and half reading the version then appending at
    it (retrying on conflict). Because no append writes before reading the stream version, the
    append that sees version v took its xid after the one that wrote v committed, so ordering the
    log by (tx, position) lists every stream's versions in order."""
    streams = [new_stream(), new_stream()]

    async def writer(w: int) -> None:
        stream = streams[w % 2]
        for i in range(25):
            events = [noted(f"{w}.{i}")] if i % 3 else [noted(f"{w}.{i}a"), noted(f"{w}.{i}b")]
            if w % 4 < 2:
                await store.append(stream, events, ANY)
                continue
            expected = await store.stream_version(stream)
            while True:
                try:
                    await store.append(stream, events, expected)
                    break
                except ConcurrencyConflict as conflict:
                    expected = conflict.current_version

    await asyncio.gather(*(writer(w) for w in range(16)))
    rows = await store.pool.fetch("SELECT stream_id, version FROM events ORDER BY tx, position")
    by_stream: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_stream[row["stream_id"]].append(row["version"])
    assert sorted(by_stream) == sorted(streams)
    for versions in by_stream.values():
        assert versions == list(range(1, len(versions) + 1))

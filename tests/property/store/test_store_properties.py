"""Hypothesis: random append/read sequences against a model of the log.

Each example reuses the test's database and truncates it first (the append-only triggers are
skipped with `session_replication_role = replica`), which keeps a run to a few seconds.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.store import (
    ANY,
    NO_STREAM,
    START,
    Checkpoint,
    ConcurrencyConflict,
    EventRegistry,
    EventStore,
    NewEvent,
    RecordedEvent,
)
from tests.integration.store.sample_events import make_registry

pytestmark = pytest.mark.postgres

STREAMS = [f"order-{uuid.UUID(int=i)}" for i in range(1, 4)]

append_op = st.tuples(
    st.just("append"),
    st.integers(0, len(STREAMS) - 1),
    st.integers(1, 4),
    st.sampled_from(["exact", "any", "stale", "no_stream"]),
)
read_op = st.tuples(st.just("read"), st.integers(1, 7), st.just(0), st.just(""))
operations = st.lists(st.one_of(append_op, read_op), min_size=1, max_size=25)


@pytest.fixture
def event_registry() -> EventRegistry:
    return make_registry()


async def _truncate(store: EventStore) -> None:
    async with store.pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("TRUNCATE events, idempotency_keys, checkpoints")
        await conn.execute("RESET session_replication_role")


@settings(max_examples=40)
@given(ops=operations)
async def test_random_appends_and_reads_match_the_model(
    store: EventStore, ops: list[tuple[str, int, int, str]]
) -> None:
    await _truncate(store)
    model: dict[str, list[uuid.UUID]] = {s: [] for s in STREAMS}
    log: list[uuid.UUID] = []
    seen: list[RecordedEvent] = []
    after = START
    for kind, index, count, mode in ops:
        if kind == "read":  # one page of the fenced log, interleaved with the appends
            page = await store.read_all(after, limit=index)
            seen += page
            after = page[-1].checkpoint if page else after
            assert [e.event_id for e in seen] == log[: len(seen)]
            continue
        stream = STREAMS[index]
        current = len(model[stream])
        events = [NewEvent("Noted", {"text": f"{stream[-1]}-{current + i}"}) for i in range(count)]
        expected = {"exact": current, "any": ANY, "stale": current + 1, "no_stream": NO_STREAM}[mode]
        should_fail = mode == "stale" or (mode == "no_stream" and current > 0)
        if should_fail:
            with pytest.raises(ConcurrencyConflict) as raised:
                await store.append(stream, events, expected)
            assert raised.value.current_version == current
            continue
        result = await store.append(stream, events, expected)
        assert result.version == current + count
        assert not result.replayed
        model[stream] += [e.event_id for e in events]
        log += [e.event_id for e in events]

    for stream, ids in model.items():
        recorded = await store.read_stream(stream)
        assert [e.event_id for e in recorded] == ids
        assert [e.version for e in recorded] == list(range(1, len(ids) + 1))
        assert (await store.verify_stream(stream)).ok

    # Sequential appends: the fenced log, read on in pages of every size used, is the append order.
    page_sizes = [size for kind, size, _, _ in ops if kind == "read"] or [1000]
    async with asyncio.timeout(30):  # the fence is cluster-wide: fail, never hang, if held
        await _read_all_pages(store, after, page_sizes, seen)
    assert [e.event_id for e in seen] == log
    positions = [e.position for e in seen]
    assert len(set(positions)) == len(positions)
    assert positions == sorted(positions)


async def _read_all_pages(
    store: EventStore, after: Checkpoint, page_sizes: list[int], seen: list[RecordedEvent]
) -> None:
    turn = 0
    while True:
        page = await store.read_all(after, limit=page_sizes[turn % len(page_sizes)])
        turn += 1
        if not page:
            if await store.events_after(after) == 0:
                return
            await asyncio.sleep(0.005)
            continue
        seen += page
        after = page[-1].checkpoint

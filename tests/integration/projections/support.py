"""Helpers shared by the projection tests (integration, property, faults)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import asyncpg

from ledger.domain import OrderEvent
from ledger.store import NO_STREAM, EventStore, load_checkpoint, reads
from ledger.store.records import START, Checkpoint
from projections import verify
from projections.db import connection
from projections.definition import Projection
from projections.fold import OrderFolder
from projections.runner import apply_batch
from projections.simulate import new_event


async def append_interleaved(
    store: EventStore, histories: Iterable[tuple[str, list[OrderEvent]]], seed: int = 0, max_chunk: int = 3
) -> int:
    """Append histories the way live traffic does: orders interleaved, 1..max_chunk events per append."""
    rng = random.Random(seed)
    pending = [(sid, list(events), 0) for sid, events in histories]
    total = 0
    while pending:
        index = rng.randrange(len(pending))
        sid, events, done = pending[index]
        take = rng.randint(1, max_chunk)
        chunk = events[done : done + take]
        await store.append(sid, [new_event(e, actor="test") for e in chunk], done if done else NO_STREAM)
        total += len(chunk)
        done += len(chunk)
        if done >= len(events):
            pending.pop(index)
        else:
            pending[index] = (sid, events, done)
    return total


async def wait_fenced(pool: asyncpg.Pool, timeout: float = 30.0) -> None:
    """Wait until every committed event is readable through the fence.

    The fence trails the oldest open write transaction anywhere in the cluster, e.g. a test on
    another database: a rebuild started before then would leave recent events to its catch-up.
    """
    async with asyncio.timeout(timeout):
        while True:
            if not await reads.events_after(pool, await reads.head(pool)):
                return
            await asyncio.sleep(0.02)


async def wait_caught_up(
    pool: asyncpg.Pool, projection: Projection, version: int | None = None, timeout: float = 30.0
) -> Checkpoint:
    """Wait until a version's checkpoint reaches the last committed event (appends must be done)."""
    name = projection.checkpoint_name(version)
    row = await pool.fetchrow("SELECT tx, position FROM events ORDER BY tx DESC, position DESC LIMIT 1")
    head = START if row is None else Checkpoint(row["tx"], row["position"])
    async with asyncio.timeout(timeout):
        while True:
            checkpoint = await load_checkpoint(pool, name) or START
            if checkpoint >= head:
                return checkpoint
            await asyncio.sleep(0.05)


async def assert_matches_fold(pool: asyncpg.Pool, projection: Projection, version: int | None = None) -> None:
    """The version's tables equal an independent fold of the log at their checkpoint."""
    v = projection.version if version is None else version
    async with connection(pool) as conn:
        checkpoint = await load_checkpoint(conn, projection.checkpoint_name(v)) or START
        report = await verify.verify(conn, projection, v, checkpoint)
    assert report.ok, report.as_json()


async def table_checksums(pool: asyncpg.Pool, projection: Projection, version: int) -> dict[str, object]:
    async with connection(pool) as conn:
        return dict(await verify.actual_checksums(conn, projection, version))


async def last_event(pool: asyncpg.Pool) -> Checkpoint:
    row = await pool.fetchrow("SELECT tx, position FROM events ORDER BY tx DESC, position DESC LIMIT 1")
    return START if row is None else Checkpoint(row["tx"], row["position"])


async def drain(
    pool: asyncpg.Pool,
    projection: Projection,
    version: int | None = None,
    batch: int = 500,
    timeout: float = 30.0,
) -> Checkpoint:
    """Apply a version's backlog in-process up to the last committed event.

    The xid8 fence is cluster-wide: another session's open transaction (any database of the
    server) can hold it back for a moment, so "no rows" is not "done"; wait for the real head.
    """
    v = projection.version if version is None else version
    head = await last_event(pool)
    folder = OrderFolder()
    async with connection(pool) as conn, asyncio.timeout(timeout):
        checkpoint = await load_checkpoint(conn, projection.checkpoint_name(v)) or START
        while checkpoint < head:
            result = await apply_batch(conn, projection, v, folder, checkpoint, limit=batch)
            checkpoint = result.checkpoint
            if not result.events:
                await asyncio.sleep(0.01)
    return checkpoint

"""docs/reliability.md#i1 and #i2: for random order histories, every read model equals the fold of its events."""

from __future__ import annotations

import dataclasses
import random

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.store import EventStore
from ledger.store.records import START
from projections import order_state, registry, transactions
from projections.db import connection
from projections.fold import OrderFolder
from projections.rebuild import rebuild
from projections.runner import apply_batch
from projections.simulate import HistoryGenerator
from tests.integration.projections.support import (
    append_interleaved,
    assert_matches_fold,
    drain,
    last_event,
    table_checksums,
)

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

PROJECTIONS = (order_state.PROJECTION, transactions.PROJECTION)


async def _reset(pool: asyncpg.Pool) -> None:
    """Empty the database between examples (the log refuses TRUNCATE unless triggers are off)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "TRUNCATE events, checkpoints, order_external_ids, idempotency_keys, projection_versions"
        )
        for p in PROJECTIONS:
            for t in p.tables:
                await conn.execute(f"DROP VIEW IF EXISTS {t.base}")
                for v in (p.version, p.version + 1):
                    await conn.execute(f"DROP TABLE IF EXISTS {t.physical(v)}")


@settings(max_examples=20)
@given(
    rnd=st.randoms(use_true_random=False),
    orders=st.integers(1, 8),
    max_events=st.integers(1, 14),
    batch=st.integers(1, 25),
    restarts=st.lists(st.integers(0, 40), max_size=3),
)
async def test_read_models_equal_the_fold_of_random_histories(
    pool: asyncpg.Pool,
    store: EventStore,
    *,
    rnd: random.Random,
    orders: int,
    max_events: int,
    batch: int,
    restarts: list[int],
) -> None:
    await _reset(pool)
    histories = list(HistoryGenerator(rng=rnd).histories(orders, max_events))
    await append_interleaved(store, histories, seed=rnd.randrange(1000))
    head = await last_event(pool)
    async with connection(pool) as conn:
        for p in PROJECTIONS:
            await registry.install(conn, p)
            folder, checkpoint, step = OrderFolder(capacity=3), START, 0
            while checkpoint < head:  # the cluster-wide fence may hold rows back for a moment
                result = await apply_batch(conn, p, p.version, folder, checkpoint, limit=batch)
                checkpoint, step = result.checkpoint, step + 1
                if step in restarts:
                    folder.clear()  # a restarted runner refolds from the store
    for p in PROJECTIONS:
        await assert_matches_fold(pool, p)
        clean = dataclasses.replace(p, version=p.version + 1)
        await rebuild(pool, clean, page_size=7, swap=False)
        await drain(pool, clean)
        assert await table_checksums(pool, p, p.version) == await table_checksums(pool, clean, clean.version)
    transactions_count = await pool.fetchval("SELECT count(*) FROM transactions")
    distinct = await pool.fetchval("SELECT count(DISTINCT (order_id, shipment_id)) FROM transactions")
    assert transactions_count == distinct

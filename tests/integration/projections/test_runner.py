"""The live runner: exactly-once batches, standby takeover, refusal of changed code."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import asyncpg
import pytest

from ledger.store import EventStore
from ledger_kernel.observability.metrics import Metrics
from projections import order_state, registry, transactions
from projections.db import connection
from projections.runner import Runner
from projections.simulate import HistoryGenerator
from tests.integration.projections.support import append_interleaved, assert_matches_fold, wait_caught_up

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

PROJECTIONS = (order_state.PROJECTION, transactions.PROJECTION)


@contextlib.asynccontextmanager
async def running(runner: Runner):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)


async def test_runner_tables_equal_the_fold_of_the_log(pool: asyncpg.Pool, store: EventStore) -> None:
    generator = HistoryGenerator(seed=1)
    await append_interleaved(store, generator.histories(150), seed=1)
    runners = [Runner(pool, p, batch_size=97, poll_interval_s=0.02, metrics=Metrics()) for p in PROJECTIONS]
    async with running(runners[0]), running(runners[1]):
        for p in PROJECTIONS:
            await wait_caught_up(pool, p)
        # Events keep coming while the runners are live: new orders and continuations.
        await append_interleaved(store, generator.histories(60), seed=2)
        for p in PROJECTIONS:
            await wait_caught_up(pool, p)
    for p in PROJECTIONS:
        await assert_matches_fold(pool, p)
    count = await pool.fetchval("SELECT count(*) FROM order_state")
    assert count == 210
    # The views serve the live version; each Transaction appears once per (order, shipment).
    dupes = await pool.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM transactions GROUP BY order_id, shipment_id HAVING count(*) > 1) d"
    )
    assert dupes == 0
    assert await pool.fetchval("SELECT count(*) FROM transactions") > 0


async def test_a_second_runner_waits_as_standby_and_takes_over(pool: asyncpg.Pool, store: EventStore) -> None:
    generator = HistoryGenerator(seed=3)
    await append_interleaved(store, generator.histories(40), seed=3)
    p = order_state.PROJECTION
    first = Runner(pool, p, poll_interval_s=0.02, metrics=Metrics())
    second = Runner(pool, p, poll_interval_s=0.02, metrics=Metrics())
    async with running(first):
        await wait_caught_up(pool, p)
        async with running(second):
            async with asyncio.timeout(30):  # the second one tried the lock and was refused
                while second.state != "standby":  # noqa: ASYNC110 - polls the runner's state
                    await asyncio.sleep(0.01)
            assert first.state == "running"
            first.stop()
            await append_interleaved(store, generator.histories(20), seed=4)
            await wait_caught_up(pool, p)
            assert second.state == "running"
    await assert_matches_fold(pool, p)


async def test_changed_logic_under_an_unchanged_version_refuses_to_start(pool: asyncpg.Pool) -> None:
    p = order_state.PROJECTION
    async with connection(pool) as conn:
        await registry.install(conn, p)
    changed = dataclasses.replace(p, modules=(*p.modules, "tests.integration.projections.support"))
    assert changed.code_hash != p.code_hash
    with pytest.raises(
        registry.CodeChanged, match="Bump order_state's VERSION and run `ledger projections rebuild"
    ):
        await Runner(pool, changed, metrics=Metrics()).run()
    # A new version while the old one is live must be built first.
    bumped = dataclasses.replace(changed, version=p.version + 1)
    with pytest.raises(registry.NotBuilt, match="ledger projections rebuild order_state"):
        await Runner(pool, bumped, metrics=Metrics()).run()

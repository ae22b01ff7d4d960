"""What a refused, failed or stale operation leaves behind: the registry as it was, the real
error, and no read model nothing updates."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence

import asyncpg
import pytest

from ledger.domain import Order
from ledger.store import EventStore, XidHorizonError
from ledger.store.store import load_checkpoint
from ledger_kernel.observability.metrics import Metrics
from projections import order_state, registry, setup
from projections.db import connection
from projections.definition import Row
from projections.rebuild import rebuild
from projections.runner import Runner
from projections.simulate import HistoryGenerator
from tests.integration.projections.support import append_interleaved, wait_caught_up, wait_fenced
from tests.integration.projections.test_rebuild import running

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

V1 = order_state.PROJECTION
V2 = dataclasses.replace(V1, version=V1.version + 1)


class ProjectionBug(Exception):
    """What a new projection's code raises: the error an operator must see."""


#: Orders an exploding projection maps before its bug shows (module level: worker processes
#: import this module to run it).
_GOOD_ORDERS = 40


def _exploding_rows(order: Order) -> Mapping[str, Sequence[Row]]:
    _exploding_rows.calls += 1  # type: ignore[attr-defined]
    if _exploding_rows.calls > _GOOD_ORDERS:  # type: ignore[attr-defined]
        raise ProjectionBug(f"cannot map order {order.id}")
    return order_state.rows(order)


_exploding_rows.calls = 0  # type: ignore[attr-defined]


async def _statuses(pool: asyncpg.Pool) -> dict[int, str]:
    return {r["version"]: r["status"] for r in await registry.versions(pool, V1.name)}


async def _active(runner: Runner) -> None:
    for _ in range(500):
        if runner.state == "running":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the runner did not take its lock (state {runner.state})")


async def _swap_to_v2(pool: asyncpg.Pool, store: EventStore, seed: int) -> None:
    """V1 live and caught up, then V2 rebuilt and swapped in (V1 kept as previous)."""
    await append_interleaved(store, HistoryGenerator(seed=seed).histories(60), seed=seed)
    async with running(pool, V1):
        await wait_caught_up(pool, V1)
    await wait_fenced(pool)
    report = await rebuild(pool, V2, page_size=100)
    assert report.swapped


async def test_a_rebuild_refused_by_a_held_lock_leaves_the_registry_and_the_rollback_target(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    await _swap_to_v2(pool, store, seed=61)
    assert await _statuses(pool) == {V1.version: "previous", V2.version: "live"}
    async with running(pool, V1) as runner:  # a runner of v1's code holds v1's lock
        await _active(runner)
        with pytest.raises(registry.RebuildLocked):
            await rebuild(pool, V1, page_size=100)
        assert await _statuses(pool) == {V1.version: "previous", V2.version: "live"}
        async with connection(pool) as conn:
            back = await registry.rollback(conn, V2)
    assert (back.from_version, back.to_version) == (V2.version, V1.version)
    assert await _statuses(pool) == {V1.version: "live", V2.version: "previous"}


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-worker-processes"])
async def test_an_error_in_a_new_projection_reaches_the_operator_as_itself(
    pool: asyncpg.Pool, store: EventStore, database_url: str, workers: int
) -> None:
    # Small pages: the fold fails while the next page is being fetched, the case that used to
    # surface as asyncpg's "another operation is in progress" instead.
    await append_interleaved(store, HistoryGenerator(seed=62).histories(150), seed=62)
    await wait_fenced(pool)
    _exploding_rows.calls = 0  # type: ignore[attr-defined]
    buggy = dataclasses.replace(V2, rows=_exploding_rows, modules=(*V2.modules, __name__))
    with pytest.raises(ProjectionBug, match="cannot map order"):
        await rebuild(pool, buggy, dsn=database_url, workers=workers, page_size=40, copy_chunk=10)
    # Nothing is held: the same version rebuilds once its code works.
    fixed = await rebuild(pool, V2, dsn=database_url, workers=workers, page_size=40)
    assert fixed.swapped
    assert fixed.orders == 150


async def test_rolling_back_to_a_version_nothing_updates_is_refused_unless_forced(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    await _swap_to_v2(pool, store, seed=63)
    # Only v2's code runs now; the log grows past the state v1 was left at.
    async with running(pool, V2):
        await append_interleaved(store, HistoryGenerator(seed=64).histories(10), seed=64)
        await wait_caught_up(pool, V2)
        async with connection(pool) as conn:
            with pytest.raises(registry.StaleRollback, match="events behind the log"):
                await registry.rollback(conn, V2)
            assert await _statuses(pool) == {V1.version: "previous", V2.version: "live"}
            forced = await registry.rollback(conn, V2, force=True)
    assert forced.to_version == V1.version
    assert forced.lag_events > 0
    assert not forced.runner_active
    assert await _statuses(pool) == {V1.version: "live", V2.version: "previous"}


async def test_rolling_back_while_the_previous_versions_runner_catches_it_up_is_allowed(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    await _swap_to_v2(pool, store, seed=65)
    await append_interleaved(store, HistoryGenerator(seed=66).histories(10), seed=66)
    async with running(pool, V1) as runner:  # v1's code deployed again: its runner catches v1 up
        await _active(runner)
        await wait_caught_up(pool, V1)
        async with connection(pool) as conn:
            back = await registry.rollback(conn, V2)
        assert back.runner_active
        assert back.lag_events == 0
        served = await pool.fetchval("SELECT count(*) FROM order_state")
    assert served == 70


async def test_build_missing_leaves_a_version_another_instance_is_building_to_that_instance(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    await append_interleaved(store, HistoryGenerator(seed=67).histories(20), seed=67)
    async with running(pool, V1):
        await wait_caught_up(pool, V1)
    async with connection(pool) as other:  # another instance's rebuild of v2 holds v2's lock
        await other.execute("SELECT pg_advisory_lock($1)", V2.lock_key())
        reports = await setup.build_missing(
            pool, [V2], dsn=database_url, workers=1, page_size=100, batch_size=50
        )
        await other.execute("SELECT pg_advisory_unlock($1)", V2.lock_key())
    assert reports == []
    assert await _statuses(pool) == {V1.version: "live"}  # untouched: the other instance builds it


async def test_runner_and_rebuild_refuse_a_cluster_whose_xids_are_behind_the_stored_ones(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    """A logical restore into a cluster with a lower xid counter would hide new events from the
    fence for good: both readers stop with what to do instead of lagging silently."""
    await append_interleaved(store, HistoryGenerator(seed=68).histories(5), seed=68)
    async with connection(pool) as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # past the append-only trigger
        await conn.execute(
            "UPDATE events SET tx = (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8"
        )
    runner = Runner(pool, V1, batch_size=200, poll_interval_s=0.02, metrics=Metrics())
    with pytest.raises(XidHorizonError, match="xid epoch"):
        await asyncio.wait_for(runner.run(), 10)
    with pytest.raises(XidHorizonError, match="xid epoch"):
        await rebuild(pool, V2, page_size=100)


async def test_a_runner_of_a_version_not_built_waits_as_standby_and_leaves_the_rebuild_to_run(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    """A rebuild that died leaves its version `building`, over bare tables: a runner of that
    code must not serve it (nor hold its lock, which would refuse the operator's next rebuild)."""
    await append_interleaved(store, HistoryGenerator(seed=69).histories(30), seed=69)
    async with running(pool, V1):
        await wait_caught_up(pool, V1)
    await wait_fenced(pool)
    async with connection(pool) as conn:
        await registry.begin_build(conn, V2)  # what a rebuild killed mid-way leaves behind
    async with running(pool, V2) as runner:
        await asyncio.sleep(0.3)  # many polls of the lock
        assert runner.state == "standby"
        assert await load_checkpoint(pool, V2.checkpoint_name()) is None
        report = await rebuild(pool, V2, page_size=100)
        assert report.swapped
        await _active(runner)  # built and live: the standby takes over
        await wait_caught_up(pool, V2)
    assert await _statuses(pool) == {V1.version: "previous", V2.version: "live"}


async def test_a_standby_runner_of_a_version_not_built_never_holds_its_lock_even_for_an_instant(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    """The operator's rebuild takes the lock with one try: a standby that took it to read the
    registry, however briefly, would make that rebuild fail as held by another runner."""
    await append_interleaved(store, HistoryGenerator(seed=70).histories(5), seed=70)
    async with connection(pool) as conn:
        await registry.begin_build(conn, V2)
    runner = Runner(pool, V2, poll_interval_s=0, metrics=Metrics())  # polls as fast as it can
    task = asyncio.create_task(runner.run())
    refused = 0
    try:
        async with connection(pool) as conn:
            for _ in range(400):
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", V2.lock_key()):
                    await conn.execute("SELECT pg_advisory_unlock($1)", V2.lock_key())
                else:
                    refused += 1
                await asyncio.sleep(0)
        assert runner.state == "standby"
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)
    assert refused == 0

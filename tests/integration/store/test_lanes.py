"""Append lanes: connections reused across appends, bounded, and always given back to the pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import pytest

from ledger.store import NO_STREAM, EventRegistry, EventStore, create_pool
from ledger.store.lanes import AppendLanes
from ledger_kernel.settings import StoreSettings
from tests.integration.store.sample_events import item, new_stream

pytestmark = pytest.mark.postgres

_PID = "SELECT pg_backend_pid() AS pid, pg_sleep($1::float8)"


async def _wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_lanes_never_hold_more_than_their_size_and_reuse_connections(pool: asyncpg.Pool) -> None:
    lanes = AppendLanes(pool, size=3, idle_s=5.0)
    try:
        rows = await asyncio.gather(*(lanes.fetchrow(_PID, 0.02) for _ in range(24)))
        pids = {row["pid"] for row in rows if row is not None}
        assert len(pids) == 3  # 24 concurrent statements shared three connections
        assert lanes.leased == 3
        again = await asyncio.gather(*(lanes.fetchrow(_PID, 0.0) for _ in range(6)))
        assert {row["pid"] for row in again if row is not None} <= pids  # reused, not re-acquired
    finally:
        await lanes.aclose()
    assert lanes.leased == 0


async def test_idle_lane_connections_go_back_to_the_pool(database_url: str) -> None:
    pool = await create_pool(database_url, StoreSettings(pool_min_size=2, pool_max_size=2))
    lanes = AppendLanes(pool, size=2, idle_s=0.05)
    try:
        await asyncio.gather(lanes.fetchrow(_PID, 0.05), lanes.fetchrow(_PID, 0.05))
        assert lanes.leased == 2
        assert pool.get_idle_size() == 0  # both held by the lanes right after the burst
        await _wait_until(lambda: lanes.leased == 0 and pool.get_idle_size() == 2)
    finally:
        await lanes.aclose()
        await pool.close()


async def test_pool_close_does_not_hang_on_lanes_that_were_never_closed(
    database_url: str, event_registry: EventRegistry
) -> None:
    pool = await create_pool(database_url, StoreSettings(pool_min_size=1, pool_max_size=2))
    store = EventStore(pool, event_registry)
    await store.append(new_stream(), [item("A")], NO_STREAM)
    # No store.aclose(): the idle lane connection goes back on its own, so close() returns.
    await asyncio.wait_for(pool.close(), timeout=5.0)


async def test_a_terminated_lane_connection_is_replaced(pool: asyncpg.Pool) -> None:
    lanes = AppendLanes(pool, size=1, idle_s=5.0)
    try:
        first = await lanes.fetchrow(_PID, 0.0)
        assert first is not None
        async with pool.acquire() as admin:
            await admin.execute("SELECT pg_terminate_backend($1)", first["pid"])
        with pytest.raises(
            (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
        ):
            await lanes.fetchrow(_PID, 0.0)
        assert lanes.leased == 0  # the dead connection went back to the pool, not to the lane
        second = await lanes.fetchrow(_PID, 0.0)
        assert second is not None
        assert second["pid"] != first["pid"]
    finally:
        await lanes.aclose()


async def test_a_cancelled_statement_returns_its_connection_to_the_pool(pool: asyncpg.Pool) -> None:
    lanes = AppendLanes(pool, size=1, idle_s=5.0)
    try:
        task = asyncio.get_running_loop().create_task(lanes.fetchrow(_PID, 10.0))
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert lanes.leased == 0
        row = await asyncio.wait_for(lanes.fetchrow(_PID, 0.0), timeout=5.0)
        assert row is not None
    finally:
        await lanes.aclose()


async def test_waiters_cancelled_while_queued_do_not_leak_a_connection(pool: asyncpg.Pool) -> None:
    lanes = AppendLanes(pool, size=1, idle_s=5.0)
    try:
        busy = asyncio.get_running_loop().create_task(lanes.fetchrow(_PID, 0.3))
        await asyncio.sleep(0.05)
        queued = [asyncio.get_running_loop().create_task(lanes.fetchrow(_PID, 0.0)) for _ in range(3)]
        await asyncio.sleep(0.05)
        for task in queued[:2]:
            task.cancel()
        results = await asyncio.gather(busy, *queued, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert isinstance(results[2], asyncio.CancelledError)
        assert results[3] is not None
        assert not isinstance(results[3], BaseException)
        assert lanes.leased == 1
    finally:
        await lanes.aclose()
    assert lanes.leased == 0

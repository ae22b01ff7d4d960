"""One event no code can project quarantines its order; the rest of the log keeps flowing.

The bad event is written straight into the log (the store's own append, no API, no command
validation), as an event accepted before the edge was bounded would be: the log is immutable,
so the runners must live with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from ledger.domain import OrderEvent
from ledger.domain.events import OrderPlaced
from ledger.domain.state import Order
from ledger.store import EventStore
from ledger_kernel.observability.metrics import Metrics
from projections import order_state, quarantine, registry, transactions
from projections.db import connection
from projections.definition import Projection, Row
from projections.quarantine import Failure
from projections.rebuild import rebuild
from projections.runner import Runner
from projections.simulate import HistoryGenerator
from projections.status import projection_status
from tests.integration.projections.support import (
    append_interleaved,
    assert_matches_fold,
    wait_caught_up,
    wait_fenced,
)
from tests.integration.projections.test_cli import _cli

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

PROJECTIONS = (order_state.PROJECTION, transactions.PROJECTION)
#: Year 10000 in UTC: Python holds it with its offset, PostgreSQL's codec cannot convert it.
END_OF_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(-timedelta(hours=14)))


@contextlib.asynccontextmanager
async def running(runner: Runner):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(runner.run())
    try:
        yield task
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)


def _placed_at_end_of_time(history: tuple[str, list[OrderEvent]]) -> tuple[str, list[OrderEvent]]:
    stream, events = history
    first = events[0]
    assert isinstance(first, OrderPlaced)
    return stream, [first.model_copy(update={"placed_at": END_OF_TIME}), *events[1:]]


async def _quarantined(pool: asyncpg.Pool, projection: Projection) -> set[str]:
    return await quarantine.streams(pool, projection.name, projection.version)


async def _wait_released(pool: asyncpg.Pool, projection: Projection, timeout: float = 30.0) -> None:
    """Wait until the runner has no quarantined order left."""
    async with asyncio.timeout(timeout):
        while True:
            if not await _quarantined(pool, projection):
                return
            await asyncio.sleep(0.05)


async def test_an_event_postgres_cannot_hold_quarantines_its_order_and_every_other_order_flows(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    generator = HistoryGenerator(seed=23)
    await append_interleaved(store, generator.histories(30), seed=1)
    bad_stream, bad_events = _placed_at_end_of_time(generator.history(max_events=6))
    await append_interleaved(store, [(bad_stream, bad_events)], seed=2)
    later = list(generator.histories(30))
    await append_interleaved(store, later, seed=3)

    metrics = Metrics()
    runners = [Runner(pool, p, batch_size=50, poll_interval_s=0.02, metrics=metrics) for p in PROJECTIONS]
    async with running(runners[0]) as first, running(runners[1]) as second:
        for p in PROJECTIONS:
            await wait_caught_up(pool, p)
        assert not first.done()
        assert not second.done()
        # Orders appended after the bad one are in the read model.
        later_ids = [s.removeprefix("order-") for s, _ in later]
        assert (
            await pool.fetchval("SELECT count(*) FROM order_state WHERE id = ANY($1::uuid[])", later_ids)
            == 30
        )
        assert (
            await pool.fetchval("SELECT count(*) FROM order_state WHERE id <> $1::uuid", bad_stream[6:]) == 60
        )

    assert await _quarantined(pool, order_state.PROJECTION) == {bad_stream}
    [entry] = await quarantine.entries(pool, order_state.PROJECTION.name, order_state.PROJECTION.version)
    assert "OverflowError" in entry["error"] or "out of range" in entry["error"]
    # `ledger projections status` and the metric say so.
    [line] = await projection_status(pool, order_state.PROJECTION)
    assert line.quarantined == 1
    sample = metrics.registry.get_sample_value(
        "ledger_projection_quarantined_orders", {"projection": order_state.PROJECTION.name}
    )
    assert sample == 1
    assert await quarantine.stale_projections(pool, bad_stream) == ["order_state"]
    for p in PROJECTIONS:  # every other order's rows equal the fold of the log
        await assert_matches_fold(pool, p)


class _Broken:
    """A row function that refuses some orders until `fixed` (a bug, then its fix)."""

    def __init__(self, rows, refuse: set[str]) -> None:  # type: ignore[no-untyped-def]
        self.rows = rows
        self.refuse = refuse
        self.fixed = False

    def __call__(self, order: Order) -> Mapping[str, Sequence[Row]]:
        if not self.fixed and f"order-{order.id}" in self.refuse:
            raise KeyError("a bug in the row function")
        result: Mapping[str, Sequence[Row]] = self.rows(order)
        return result


async def test_a_quarantined_order_is_folded_again_on_request_once_the_bug_is_fixed(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    generator = HistoryGenerator(seed=5)
    histories = list(generator.histories(20))
    refused = {histories[3][0], histories[11][0]}
    await append_interleaved(store, histories, seed=5)
    p = order_state.PROJECTION
    broken = _Broken(p.rows, refused)
    buggy = dataclasses.replace(p, rows=broken)
    assert buggy.code_hash == p.code_hash
    runner = Runner(pool, buggy, batch_size=7, poll_interval_s=0.02, metrics=Metrics())
    async with running(runner):
        await wait_caught_up(pool, p)
        assert await _quarantined(pool, p) == refused
        assert runner.quarantined == refused
        assert await pool.fetchval("SELECT count(*) FROM order_state") == 18
        broken.fixed = True
        assert await quarantine.request_retry(pool, p.name, p.version) == 2
        await _wait_released(pool, p)
    await assert_matches_fold(pool, p)


async def test_a_runner_folds_its_quarantined_orders_again_when_it_starts(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    generator = HistoryGenerator(seed=8)
    histories = list(generator.histories(12))
    refused = {histories[0][0]}
    await append_interleaved(store, histories, seed=8)
    p = order_state.PROJECTION
    buggy = dataclasses.replace(p, rows=_Broken(p.rows, refused))
    async with running(Runner(pool, buggy, poll_interval_s=0.02, metrics=Metrics())):
        await wait_caught_up(pool, p)
    assert await _quarantined(pool, p) == refused
    await append_interleaved(store, generator.histories(3), seed=9)  # the log moves on meanwhile
    # The deploy with the fix: the new runner folds the order again as it takes over.
    metrics = Metrics()
    async with running(Runner(pool, p, poll_interval_s=0.02, metrics=metrics)):
        await wait_caught_up(pool, p)
    assert await _quarantined(pool, p) == set()
    assert (
        metrics.registry.get_sample_value("ledger_projection_quarantined_orders", {"projection": p.name}) == 0
    )
    await assert_matches_fold(pool, p)


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_rebuild_reports_the_orders_it_cannot_fold_instead_of_dying(
    pool: asyncpg.Pool, store: EventStore, database_url: str, workers: int
) -> None:
    generator = HistoryGenerator(seed=31)
    await append_interleaved(store, generator.histories(40), seed=31)
    bad_stream, bad_events = _placed_at_end_of_time(generator.history(max_events=5))
    await append_interleaved(store, [(bad_stream, bad_events)], seed=32)
    await append_interleaved(store, generator.histories(40), seed=33)
    await wait_fenced(pool)
    v2 = dataclasses.replace(order_state.PROJECTION, version=order_state.PROJECTION.version + 1)
    report = await rebuild(pool, v2, dsn=database_url, workers=workers, page_size=25, copy_chunk=7)
    assert report.swapped
    assert report.quarantined == [bad_stream]
    assert report.as_json()["quarantined_count"] == 1
    assert report.verification is not None
    assert report.verification.ok
    assert await quarantine.streams(pool, v2.name, v2.version) == {bad_stream}
    assert await pool.fetchval("SELECT count(*) FROM order_state") == 80
    await assert_matches_fold(pool, v2)


async def test_the_operator_sees_quarantined_orders_and_asks_for_a_refold_from_the_cli(
    pool: asyncpg.Pool, database_url: str
) -> None:
    p = order_state.PROJECTION
    async with connection(pool) as conn:
        await registry.install(conn, p)
        await quarantine.record(
            conn,
            p.name,
            p.version,
            [Failure("order-" + "0" * 32, 3, 17, "OverflowError: date value out of range")],
        )
    stream = await pool.fetchval("SELECT stream_id FROM projection_quarantine")
    code, status = await _cli(database_url, "status")
    assert code == 0, status
    assert "quarantined" in status
    code, listing = await _cli(database_url, "quarantine", p.name)
    assert code == 0, listing
    assert "OverflowError: date value out of range" in listing
    assert "1 quarantined order(s)" in listing
    code, refold = await _cli(database_url, "refold", p.name, stream.removeprefix("order-"))
    assert code == 0, refold
    assert "refold requested for 1 quarantined order(s)" in refold
    assert await pool.fetchval(
        "SELECT retry_requested FROM projection_quarantine WHERE stream_id = $1", stream
    )

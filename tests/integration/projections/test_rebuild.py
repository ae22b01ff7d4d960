"""Blue/green rebuilds: reads served throughout, verified swap, rollback, refused swap."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest

from ledger.domain import Order, OrderEvent
from ledger.store import NO_STREAM, EventRegistry, EventStore
from ledger.store.pool import create_pool
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import StoreSettings
from ledger_kernel.wire.streams import ORDER_STREAM_PREFIX
from projections import checksums, order_state, partition, queries, registry, setup, verify
from projections.db import connection
from projections.definition import Projection, Row
from projections.partition import StreamRange
from projections.rebuild import RebuildReport, VerificationFailed, rebuild
from projections.runner import Runner
from projections.simulate import HistoryGenerator, new_event
from projections.verify import LOG
from tests.integration.projections.support import (
    append_interleaved,
    assert_matches_fold,
    table_checksums,
    wait_caught_up,
    wait_fenced,
)

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

V1 = order_state.PROJECTION


@contextlib.asynccontextmanager
async def running(pool: asyncpg.Pool, projection: Projection) -> AsyncIterator[Runner]:
    runner = Runner(pool, projection, batch_size=200, poll_interval_s=0.02, metrics=Metrics())
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)


async def test_rebuild_while_8_writers_append_serves_reads_and_equals_live(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    await append_interleaved(store, HistoryGenerator(seed=10).histories(300), seed=10)
    v2 = dataclasses.replace(V1, version=V1.version + 1)
    stop = asyncio.Event()
    reads = 0

    async def writer(seed: int) -> None:
        generator = HistoryGenerator(seed=100 + seed)
        while not stop.is_set():
            await append_interleaved(store, generator.histories(3), seed=seed)

    async def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            items, _ = await queries.list_orders(pool, limit=50)
            assert items
            reads += 1
            await asyncio.sleep(0.005)

    async with running(pool, V1):
        await wait_caught_up(pool, V1)
        tasks = [asyncio.create_task(writer(i)) for i in range(8)] + [asyncio.create_task(reader())]
        try:
            before = await pool.fetchval("SELECT count(*) FROM events")
            report = await rebuild(pool, v2, page_size=500, batch_size=200)
            during = await pool.fetchval("SELECT count(*) FROM events") - before
            await asyncio.sleep(0.3)  # reads and writes go on after the swap too
        finally:
            stop.set()
            await asyncio.gather(*tasks)  # a reader error fails the test here
        async with running(pool, v2):
            await wait_caught_up(pool, V1)
            await wait_caught_up(pool, v2)
    assert report.swapped
    assert report.previous == V1.version
    # Writes went on during the rebuild; whether they landed in its bulk or its catch-up phase
    # depends on timing, so equality with the live version below is what proves they all count.
    assert during > 0
    assert reads > 10
    assert await registry.live_version(pool, V1.name) == v2.version
    assert await table_checksums(pool, V1, V1.version) == await table_checksums(pool, v2, v2.version)
    await assert_matches_fold(pool, v2)


def _buggy_rows(order: Order) -> Mapping[str, Sequence[Row]]:
    """v1's bug: the total column double-counts shipping."""
    rows = dict(order_state.rows(order))
    (row,) = rows["order_state"]
    rows["order_state"] = [(*row[:9], row[9] + order.amounts.shipping, *row[10:])]
    return rows


async def _totals_match(pool: asyncpg.Pool) -> bool:
    wrong = await pool.fetchval(
        "SELECT count(*) FROM order_state WHERE total <> ((doc::json->>'total')::numeric"
        " * 10 ^ CASE currency WHEN 'JPY' THEN 0 ELSE 2 END)::bigint"
    )
    return bool(wrong == 0)


async def test_operator_fixes_a_projection_bug_with_a_verified_rebuild_then_rolls_back(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    buggy = dataclasses.replace(V1, rows=_buggy_rows, modules=(*V1.modules, __name__))
    fixed = dataclasses.replace(V1, version=V1.version + 1)
    await append_interleaved(store, HistoryGenerator(seed=20).histories(120), seed=20)
    async with running(pool, buggy):
        await wait_caught_up(pool, buggy)
        assert not await _totals_match(pool)  # the bug is visible to readers

        report = await rebuild(pool, fixed, page_size=300)
        assert report.swapped
        assert report.verification is not None
        assert report.verification.ok
        assert await _totals_match(pool)  # readers now get v2, fixed
        versions = {r["version"]: r["status"] for r in await registry.versions(pool, V1.name)}
        assert versions == {V1.version: "previous", fixed.version: "live"}

        async with connection(pool) as conn:
            back = await registry.rollback(conn, fixed)
        assert (back.from_version, back.to_version) == (fixed.version, V1.version)
        assert not await _totals_match(pool)  # v1 serves again, bug and all
        versions = {r["version"]: r["status"] for r in await registry.versions(pool, V1.name)}
        assert versions == {V1.version: "live", fixed.version: "previous"}
    await assert_matches_fold(pool, buggy)


@pytest.mark.parametrize("refold", [False, True], ids=["recorded-checksums", "refold"])
@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-worker-processes"])
async def test_a_verification_failure_refuses_the_swap(
    database_url: str, pool: asyncpg.Pool, store: EventStore, workers: int, refold: bool
) -> None:
    await append_interleaved(store, HistoryGenerator(seed=30).histories(80), seed=30)
    v2 = dataclasses.replace(V1, version=V1.version + 1)

    async def corrupt(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
        await conn.execute(
            f"UPDATE {projection.table('order_state').physical(version)} SET total = total + 1"
            f" WHERE id = (SELECT min(id::text)::uuid FROM {projection.table('order_state').physical(version)})"
        )

    async with running(pool, V1):
        await wait_caught_up(pool, V1)
        with pytest.raises(VerificationFailed, match="1 difference") as failure:
            await rebuild(pool, v2, before_verify=corrupt, dsn=database_url, workers=workers, refold=refold)
    report = failure.value.report
    assert report.reference == ("refold" if refold else "recorded")
    assert [(d.table, d.kind) for d in report.differences] == [("order_state", "different")]
    assert await registry.live_version(pool, V1.name) == V1.version
    versions = {r["version"]: r["status"] for r in await registry.versions(pool, V1.name)}
    assert versions == {V1.version: "live", v2.version: "failed"}
    assert await _totals_match(pool)
    # A failed version keeps what its build recorded, for inspection.
    assert await pool.fetchval(f"SELECT count(*) FROM {checksums.table_name(v2, v2.version)}") == 80


class _AppendAtCatchUp:
    """A progress sink that appends events (blocking the rebuild) when its catch-up phase begins,
    so they are certainly not in the bulk load and certainly in the catch-up."""

    def __init__(self, database_url: str, registry_: EventRegistry, settings: StoreSettings) -> None:
        self.appends: list[tuple[str, list[OrderEvent], int]] = []
        self._args = (database_url, registry_, settings)
        self.phases: dict[str, list[int | None]] = {}  # per phase: its total, then what was advanced
        self._current = ""

    def phase(self, name: str, total: int | None = None) -> None:
        self._current = name
        self.phases[name] = [total, 0]
        if name == "catch-up":
            with ThreadPoolExecutor(1) as thread:  # its own event loop: the rebuild's is busy calling us
                thread.submit(asyncio.run, self._append()).result()

    def advance(self, events: int, total: int | None = None) -> None:
        progress = self.phases[self._current]
        progress[1] = (progress[1] or 0) + events

    async def _append(self) -> None:
        url, registry_, settings = self._args
        own = await create_pool(url, settings)
        store = EventStore(own, registry_, settings)
        try:
            for sid, events, expected in self.appends:
                await store.append(sid, [new_event(e, actor="test") for e in events], expected or NO_STREAM)
            await wait_fenced(own)  # so the catch-up certainly reads them
        finally:
            await store.aclose()
            await own.close()


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-worker-processes"])
async def test_verification_refolds_the_orders_the_catch_up_touched(
    database_url: str,
    pool: asyncpg.Pool,
    store: EventStore,
    *,
    event_registry: EventRegistry,
    store_settings: StoreSettings,
    workers: int,
) -> None:
    histories = [h for h in HistoryGenerator(seed=35).histories(60, max_events=8) if len(h[1]) > 1]
    sink = _AppendAtCatchUp(database_url, event_registry, store_settings)
    for sid, events in histories[:20]:  # half of these orders is in the bulk load, the rest caught up
        half = len(events) // 2
        await store.append(sid, [new_event(e, actor="test") for e in events[:half]], NO_STREAM)
        sink.appends.append((sid, events[half:], half))
    sink.appends += [(sid, events, 0) for sid, events in histories[20:25]]  # new in the catch-up
    await append_interleaved(store, histories[25:], seed=35)
    await wait_fenced(pool)  # so the bulk load certainly reads them
    v2 = dataclasses.replace(V1, version=V1.version + 1)
    touched = sink.appends[3][0].removeprefix(ORDER_STREAM_PREFIX)

    async def corrupt_a_touched_order(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
        await conn.execute(
            f"UPDATE {projection.table('order_lines').physical(version)} SET quantity = quantity + 1"
            " WHERE order_id = $1::uuid",
            touched,
        )

    with pytest.raises(VerificationFailed) as failure:
        await rebuild(
            pool, v2, dsn=database_url, workers=workers, progress=sink, before_verify=corrupt_a_touched_order
        )
    # The build recorded this order before its catch-up events: only a refold of it from the log
    # can tell the caught-up rows right, and it does, down to the corrupted table.
    assert {(d.order_id, d.table, d.kind) for d in failure.value.report.differences} == {
        (touched, "order_lines", "different")
    }

    sink.appends = []
    await append_interleaved(store, HistoryGenerator(seed=36).histories(10), seed=36)
    await wait_fenced(pool)
    v3 = dataclasses.replace(V1, version=V1.version + 2)
    sink.appends = [(sid, events, 0) for sid, events in HistoryGenerator(seed=37).histories(5)]
    report = await rebuild(pool, v3, dsn=database_url, workers=workers, progress=sink)
    assert report.catchup_events == sum(len(events) for _, events, _ in sink.appends)
    assert report.verification is not None
    assert report.verification.ok
    assert report.verification.reference == "recorded"
    assert report.verification.orders == len(histories) + 10 + 5
    await assert_matches_fold(pool, v3)
    # Progress: every event of the bulk load, then every row verification read back.
    rows = sum(report.verification.actual_rows.values())
    assert sink.phases["bulk"] == [report.bulk_events, report.bulk_events]
    assert sink.phases["verify"][1] == rows
    total = sink.phases["verify"][0]  # the tables' row estimate before the catch-up added some
    assert total is not None
    assert 0 < total <= rows
    # Verified: what the build recorded is dropped.
    assert await pool.fetchval("SELECT to_regclass($1)", checksums.table_name(v3, v3.version)) is None


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-worker-processes"])
async def test_verification_reports_events_the_bulk_load_did_not_fold(
    database_url: str, pool: asyncpg.Pool, store: EventStore, workers: int
) -> None:
    histories = [h for h in HistoryGenerator(seed=38).histories(40) if len(h[1]) > 1]
    await append_interleaved(store, histories, seed=38)
    await wait_fenced(pool)  # so the bulk load certainly folds (and records) them
    v2 = dataclasses.replace(V1, version=V1.version + 1)
    unfolded, short = (sid.removeprefix(ORDER_STREAM_PREFIX) for sid, _ in histories[:2])

    async def forget(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
        """As if the load had skipped one order's events, and the last event of another."""
        table = checksums.table_name(projection, version)
        await conn.execute(f"DELETE FROM {table} WHERE stream_id = $1", f"{ORDER_STREAM_PREFIX}{unfolded}")
        await conn.execute(
            f"UPDATE {table} SET events = events - 1, last_version = last_version - 1 WHERE stream_id = $1",
            f"{ORDER_STREAM_PREFIX}{short}",
        )

    with pytest.raises(VerificationFailed) as failure:
        await rebuild(pool, v2, dsn=database_url, workers=workers, before_verify=forget)
    log_differences = {(d.order_id, d.kind) for d in failure.value.report.differences if d.table == LOG}
    assert log_differences == {(unfolded, "missing"), (short, "different")}


async def test_a_parallel_rebuild_equals_the_live_version(
    database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    generator = HistoryGenerator(seed=40)
    await append_interleaved(store, generator.histories(150), seed=40)
    await wait_fenced(pool)  # so the verification's checkpoint certainly covers all 150 orders
    v2 = dataclasses.replace(V1, version=V1.version + 1)
    async with running(pool, V1):
        report = await rebuild(pool, v2, dsn=database_url, workers=2, page_size=100)
        await append_interleaved(store, generator.histories(20), seed=41)
        async with running(pool, v2):
            await wait_caught_up(pool, V1)
            await wait_caught_up(pool, v2)
    assert report.swapped
    assert report.bulk_events > 0
    assert report.verification is not None
    assert report.verification.orders == 150
    assert await table_checksums(pool, V1, V1.version) == await table_checksums(pool, v2, v2.version)


async def test_build_missing_rebuilds_a_bumped_version_once_then_leaves_it_alone(
    database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    older = dataclasses.replace(V1, version=V1.version - 1)
    await append_interleaved(store, HistoryGenerator(seed=40).histories(60), seed=40)
    async with running(pool, older):
        await wait_caught_up(pool, older)
    with pytest.raises(registry.NotBuilt):
        await Runner(pool, V1, metrics=Metrics()).run()  # the deploy after the upgrade refuses alone

    def build() -> Awaitable[list[RebuildReport]]:
        return setup.build_missing(pool, [V1], dsn=database_url, workers=2, page_size=100, batch_size=50)

    (report,) = await build()
    assert (report.previous, report.version, report.swapped) == (older.version, V1.version, True)
    assert await registry.live_version(pool, V1.name) == V1.version
    assert await build() == []
    assert await table_checksums(pool, older, older.version) == await table_checksums(pool, V1, V1.version)


async def test_rebuilding_twice_gives_identical_content(
    database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    """docs/reliability.md#f16: two rebuilds of the same log (one in-process, one split over 2 workers)
    hold the same rows, order for order."""
    await append_interleaved(store, HistoryGenerator(seed=45).histories(120), seed=45)
    await wait_fenced(pool)
    first = dataclasses.replace(V1, version=V1.version + 1)
    second = dataclasses.replace(V1, version=V1.version + 2)
    await rebuild(pool, first, page_size=100)
    await rebuild(pool, second, dsn=database_url, workers=2, page_size=100)
    content = await table_checksums(pool, first, first.version)
    assert len(content) == 120
    assert content == await table_checksums(pool, second, second.version)


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-worker-processes"])
async def test_verification_of_a_long_log_runs_in_bounded_parts(
    database_url: str, pool: asyncpg.Pool, store: EventStore, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part holds its orders' checksums in memory: a long log is verified in more parts than
    workers, each of bounded size, and a difference in any of them still shows."""
    await append_interleaved(store, HistoryGenerator(seed=46).histories(80), seed=46)
    await wait_fenced(pool)
    await pool.execute("ANALYZE events")
    monkeypatch.setattr(verify, "_EVENTS_PER_PART", 40)
    parts: list[int] = []
    monkeypatch.setattr(verify, "stream_ranges", _spy(partition.stream_ranges, parts))
    v2 = dataclasses.replace(V1, version=V1.version + 1)

    async def corrupt(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
        await conn.execute(
            f"UPDATE {projection.table('order_lines').physical(version)} SET name = name || '!'"
            f" WHERE order_id = (SELECT max(order_id::text)::uuid FROM {projection.table('order_lines').physical(version)})"
        )

    with pytest.raises(VerificationFailed) as failure:
        await rebuild(pool, v2, dsn=database_url, workers=workers, before_verify=corrupt)
    report = failure.value.report
    assert parts[-1] > 4  # a few hundred events in parts of 40
    assert report.orders == 80
    assert [(d.table, d.kind) for d in report.differences] == [("order_lines", "different")]


def _spy(
    stream_ranges: Callable[..., Awaitable[list[StreamRange]]], parts: list[int]
) -> Callable[..., Awaitable[list[StreamRange]]]:
    async def spy(*args: Any) -> list[StreamRange]:
        ranges = await stream_ranges(*args)
        parts.append(len(ranges))
        return ranges

    return spy

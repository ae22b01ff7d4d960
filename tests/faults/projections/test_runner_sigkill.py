"""docs/reliability.md#f17: the runner SIGKILLed mid-batch, again and again, never double-applies an event."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from ledger.store import EventStore, load_checkpoint
from ledger.store.records import START
from projections import order_state, transactions
from projections.rebuild import rebuild
from projections.simulate import HistoryGenerator
from tests.integration.projections.support import (
    append_interleaved,
    assert_matches_fold,
    drain,
    table_checksums,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parents[3]
PROJECTIONS = (order_state.PROJECTION, transactions.PROJECTION)
KILLS = 20


async def _start_runner(database_url: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_PROJECTIONS__BATCH_SIZE": "150",
        "LEDGER_LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projections.cli", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def test_runner_killed_20_times_mid_batch_equals_a_clean_rebuild(
    database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    generator = HistoryGenerator(seed=77)
    histories = list(generator.histories(1800))
    first, second = histories[:900], histories[900:]
    await append_interleaved(store, first, seed=1)

    rng = random.Random(5)
    name = order_state.PROJECTION.checkpoint_name()
    chunks = [second[i::KILLS] for i in range(KILLS)]
    working = 0
    for i in range(KILLS):
        # Writers keep appending while the runner starts, works and dies.
        appending = asyncio.create_task(append_interleaved(store, chunks[i], seed=i))
        before = await load_checkpoint(pool, name) or START
        process = await _start_runner(database_url)
        # Wait until it has committed a batch (an event, not a time limit: start-up is slow on a
        # loaded machine), then kill it a random moment later: with a backlog, a batch is in
        # flight almost all the time.
        async with asyncio.timeout(120):
            while (await load_checkpoint(pool, name) or START) == before:
                assert process.returncode is None, "the runner died by itself"
                await asyncio.sleep(0.01)
        working += 1
        await asyncio.sleep(rng.uniform(0.0, 0.12))
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await appending
    total = await pool.fetchval("SELECT count(*) FROM events")
    assert total >= 10_000
    assert working == KILLS, "every kill landed on a runner that was applying batches"

    final = await _start_runner(database_url)
    try:
        async with asyncio.timeout(60):
            while True:
                head = await pool.fetchrow(
                    "SELECT tx, position FROM events ORDER BY tx DESC, position DESC LIMIT 1"
                )
                assert head is not None
                done = [await load_checkpoint(pool, p.checkpoint_name()) for p in PROJECTIONS]
                if all(c is not None and (c.tx, c.position) == (head["tx"], head["position"]) for c in done):
                    break
                await asyncio.sleep(0.1)
    finally:
        final.send_signal(signal.SIGTERM)
        await final.wait()

    for projection in PROJECTIONS:
        await assert_matches_fold(pool, projection)
        clean = dataclasses.replace(projection, version=projection.version + 1)
        report = await rebuild(pool, clean, swap=False)
        assert report.verification is not None
        assert report.verification.ok
        await drain(pool, clean)
        assert await table_checksums(pool, projection, projection.version) == await table_checksums(
            pool, clean, clean.version
        )
    # No Transaction counted twice: one row per (order, shipment), as many as a clean rebuild has.
    live, clean_table = (
        transactions.TRANSACTIONS.physical(v) for v in (transactions.VERSION, transactions.VERSION + 1)
    )
    counts = await pool.fetchrow(
        f"SELECT (SELECT count(*) FROM {live}) AS live, (SELECT count(*) FROM {clean_table}) AS clean,"
        f" (SELECT count(DISTINCT (order_id, shipment_id)) FROM {live}) AS distinct_live"
    )
    assert counts is not None
    assert counts["live"] == counts["clean"] == counts["distinct_live"] > 0

"""The operator's rebuild through `ledger projections`: build beside the live version, verify, swap, roll back."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.store import EventStore
from ledger_kernel.observability.metrics import Metrics
from projections import order_state, registry
from projections.runner import Runner
from projections.simulate import HistoryGenerator
from tests.integration.projections.support import (
    append_interleaved,
    assert_matches_fold,
    table_checksums,
    wait_caught_up,
    wait_fenced,
)

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parents[3]
DEPLOYED = order_state.PROJECTION
OLDER = dataclasses.replace(DEPLOYED, version=DEPLOYED.version - 1)


async def _cli(database_url: str, *args: str) -> tuple[int, str]:
    """Run `python -m projections.cli ARGS`: exit code and what it printed (rich writes to stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "projections.cli", *args, cwd=ROOT,
        env={**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_LOG_LEVEL": "WARNING", "COLUMNS": "200"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def _report(pool: asyncpg.Pool, version: int) -> dict[str, Any]:
    (row,) = [r for r in await registry.versions(pool, DEPLOYED.name) if r["version"] == version]
    report = row["report"]
    return dict(json.loads(report) if isinstance(report, str) else report)


async def test_operator_rebuilds_verifies_swaps_and_rolls_back_from_the_cli(
    database_url: str, pool: asyncpg.Pool, store: EventStore
) -> None:
    await append_interleaved(store, HistoryGenerator(seed=50).histories(120), seed=50)
    runner = Runner(pool, OLDER, batch_size=200, poll_interval_s=0.02, metrics=Metrics())
    task = asyncio.create_task(runner.run())
    try:
        await wait_caught_up(pool, OLDER)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 10)
    await wait_fenced(pool)

    # A dry run first: built and verified against a second full fold, the old version still serves.
    code, output = await _cli(
        database_url, "rebuild", DEPLOYED.name, "--workers", "2", "--refold", "--no-swap"
    )
    assert code == 0, output
    assert "verified, not swapped" in output
    assert await registry.live_version(pool, DEPLOYED.name) == OLDER.version
    dry_run = await _report(pool, DEPLOYED.version)
    assert dry_run["verification"]["reference"] == "refold"
    assert dry_run["verification"]["orders"] == 120

    code, output = await _cli(database_url, "rebuild", DEPLOYED.name, "--workers", "2")
    assert code == 0, output
    assert "verified and swapped" in output
    assert f"v{OLDER.version} kept for rollback" in output
    assert await registry.live_version(pool, DEPLOYED.name) == DEPLOYED.version
    swapped = await _report(pool, DEPLOYED.version)
    assert swapped["verification"]["reference"] == "recorded"
    assert swapped["verification"]["ok"]
    await assert_matches_fold(pool, DEPLOYED)
    assert await table_checksums(pool, OLDER, OLDER.version) == await table_checksums(
        pool, DEPLOYED, DEPLOYED.version
    )

    # The live version is never rebuilt in place.
    code, output = await _cli(database_url, "rebuild", DEPLOYED.name)
    assert code == 2, output
    assert "already live" in output

    code, output = await _cli(database_url, "rollback", DEPLOYED.name)
    assert code == 0, output
    assert await registry.live_version(pool, DEPLOYED.name) == OLDER.version

"""A rebuild's worker processes end with it: on an error, on cancellation, and when it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from projections.bulk import WorkerPool

ROOT = Path(__file__).resolve().parents[3]
#: Longer than any test may take: a part that is still running when its pool exits was stopped.
_PART_SECONDS = 120.0


def _long_part() -> None:
    time.sleep(_PART_SECONDS)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _worker_pids(pool: WorkerPool) -> list[int]:
    for warm in pool._warm:
        warm.result(timeout=60)
    return list(pool.executor._processes)


def _wait_ended(pids: list[int], timeout_s: float = 30.0) -> list[int]:
    """The pids still running after up to `timeout_s` (a generous bound, not a speed target)."""
    deadline = time.monotonic() + timeout_s
    while (left := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class _Failed(Exception):
    pass


async def test_a_failed_rebuild_stops_its_workers_instead_of_waiting_for_their_parts() -> None:
    loop = asyncio.get_running_loop()
    pool = WorkerPool(2)
    pids = _worker_pids(pool)
    parts = [loop.run_in_executor(pool.executor, _long_part) for _ in range(2)]
    await asyncio.sleep(0.2)  # both parts are running
    started = time.monotonic()
    pool.__exit__(_Failed, _Failed(), None)  # how `with WorkerPool(...)` is left on an error
    assert time.monotonic() - started < _PART_SECONDS / 2
    assert _wait_ended(pids) == []
    outcomes = await asyncio.gather(*parts, return_exceptions=True)
    assert all(isinstance(outcome, BaseException) for outcome in outcomes)  # none finished


def test_a_finished_rebuild_waits_for_its_workers_to_exit_cleanly() -> None:
    with WorkerPool(2) as pool:
        pids = _worker_pids(pool)
        assert all(_alive(pid) for pid in pids)
    assert _wait_ended(pids) == []


_KILLED_PARENT = """
import sys, time
from projections.bulk import WorkerPool
from tests.unit.projections import test_worker_pool as t
pool = WorkerPool(2)
for pid in t._worker_pids(pool):
    print(pid, flush=True)
futures = [pool.executor.submit(t._long_part) for _ in range(2)]
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_exit_when_the_rebuilding_process_dies_without_stopping_them(sig: signal.Signals) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        pids = [int(parent.stdout.readline()) for _ in range(2)]
        assert all(_alive(pid) for pid in pids)
        parent.send_signal(sig)
        parent.wait(30)
        assert _wait_ended(pids) == []
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()  # an unclosed pipe is a ResourceWarning (an error in this suite)

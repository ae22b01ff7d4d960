"""`ledger dev` from an empty directory: the demo story reaches both sandboxes, and Ctrl-C leaves nothing.

The stack runs on its embedded defaults exactly as a newcomer gets it: embedded PostgreSQL,
Tansu, both sandboxes and every ledger process, with none of the test services' variables set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ledger_app.dev.demo import read_env, run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_SCRUBBED = ("LEDGER_", "PYTEST_XDIST")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tree(pid: int) -> set[int]:
    try:
        proc = psutil.Process(pid)
        return {pid, *(c.pid for c in proc.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _postmaster_pid(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return None
    return int(pidfile.read_text().splitlines()[0])


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_dev_stack_runs_the_demo_story_and_stops_without_leftovers(tmp_path: Path) -> None:
    home = tmp_path / ".ledger"
    log = (tmp_path / "dev.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger_app.cli", "dev", "--api-port", "0"],
        cwd=tmp_path,
        env=_clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        env_file = home / "dev.env"
        while not env_file.exists():
            assert proc.poll() is None, (tmp_path / "dev.out").read_text()
            assert time.monotonic() < deadline, "ledger dev did not become ready in 120 s"
            time.sleep(0.25)
        env = read_env(env_file)
        assert set(env) >= {
            "LEDGER_API_URL",
            "LEDGER_CONSOLE_URL",
            "LEDGER_TOKEN",
            "LEDGER_DATABASE_URL",
            "LEDGER_KAFKA_BOOTSTRAP_SERVERS",
            "LEDGER_OMNEO_SANDBOX_URL",
            "LEDGER_OMNISEND_SANDBOX_URL",
        }

        assert env["LEDGER_CONSOLE_URL"] == env["LEDGER_API_URL"] + "/console"
        printed = (tmp_path / "dev.out").read_text()
        while "ready. Ctrl-C" not in printed:  # printed right after dev.env is written
            assert proc.poll() is None, printed
            assert time.monotonic() < deadline, printed
            time.sleep(0.1)
            printed = (tmp_path / "dev.out").read_text()
        assert f"console      {env['LEDGER_CONSOLE_URL']}" in printed, printed
        signin = httpx.get(env["LEDGER_CONSOLE_URL"] + "/signin", timeout=10)
        assert signin.status_code == 200
        assert 'name="token"' in signin.text

        lines: list[str] = []
        result = run_demo(env_file, lines.append, timeout_s=90)

        assert len(result["transactions"]) == 2
        # The Omneo mapping keys orders by the ledger id; the producer's id travels as order_number.
        omneo_orders = [
            o for o in result["omneo"]["orders"].values() if o.get("external_id") == result["order_id"]
        ]
        assert len(omneo_orders) == 1
        remote_id = str(omneo_orders[0]["id"])
        linked = [t for t in result["omneo"]["transactions"].values() if str(t.get("order_id")) == remote_id]
        assert len(linked) == 2
        omnisend = [o for o in result["omnisend"]["orders"].values() if result["order_id"] in str(o)]
        assert omnisend
        assert omnisend[0]["paymentStatus"] == "paid"
        # The printed curl is runnable as shown; repeating it replays the stored outcome (same key).
        first_curl = next(line for line in lines if line.startswith("curl "))
        replay = subprocess.run(
            ["bash", "-c", first_curl],
            env={**_clean_env(), "LEDGER_TOKEN": env["LEDGER_TOKEN"]},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(replay.stdout)["data"]["id"] == result["order_id"]

        pids = _tree(proc.pid)
        postmaster = _postmaster_pid(home / "pgdata")
        assert postmaster is not None
        pids.add(postmaster)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        log.close()

    assert proc.returncode == 0, (tmp_path / "dev.out").read_text()
    deadline = time.monotonic() + 15
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(pids) == set(), f"left behind: {_alive(pids)}"
    assert "no process left behind" in (tmp_path / "dev.out").read_text()

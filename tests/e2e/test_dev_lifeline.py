"""`ledger dev` killed hard leaves nothing behind, one per folder, and a broker it restarts loses nothing.

Issue 23 L: SIGKILLed (as an OOM kill or a crashed terminal would end it), `ledger dev` used to
leave its whole stack running and the API holding its port; a second one started beside it.
Issue 23 B: a killed in-memory broker was never restarted, and the events appended meanwhile
never reached the destinations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from ledger_app.dev.broker import free_port
from ledger_app.dev.demo import place_order_body, read_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

_SCRUBBED = ("LEDGER_", "PYTEST_XDIST")
_READY_S = 180


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _dev(folder: Path, api_port: int, out: Path) -> subprocess.Popen[bytes]:
    with out.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ledger_app.cli", "dev", "--api-port", str(api_port)],
            cwd=folder,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _wait_ready(proc: subprocess.Popen[bytes], folder: Path, out: Path) -> dict[str, str]:
    deadline = time.monotonic() + _READY_S
    env_file = folder / ".ledger" / "dev.env"
    while not (env_file.exists() and "ready." in out.read_text()):
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, f"ledger dev did not become ready in {_READY_S} s"
        time.sleep(0.25)
    return read_env(env_file)


def _living(pids: set[int]) -> set[int]:
    """The pids still running (a zombie waiting for its reaper has ended)."""
    alive = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
    return alive


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    """Wait for every process of `pids` to exit (psutil waits on each one's exit); what is left."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    deadline = time.monotonic() + timeout_s
    while _living(pids) and time.monotonic() < deadline:
        psutil.wait_procs([p for p in procs if p.pid in _living(pids)], timeout=1)
    return _living(pids)


def _port_free(port: int) -> bool:
    with contextlib.closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _stack_pids(proc: subprocess.Popen[bytes], folder: Path) -> set[int]:
    pids = {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))}
    pidfile = folder / ".ledger" / "pgdata" / "postmaster.pid"
    postmaster = int(pidfile.read_text().splitlines()[0])
    pids.add(postmaster)
    pids.update(c.pid for c in psutil.Process(postmaster).children(recursive=True))
    return pids


def test_a_second_dev_in_the_same_folder_is_refused_and_a_sigkilled_dev_leaves_no_process_and_frees_its_port(
    tmp_path: Path,
) -> None:
    folder = tmp_path
    out = folder / "dev.out"
    port = free_port()
    proc = _dev(folder, port, out)
    try:
        _wait_ready(proc, folder, out)
        second = subprocess.run(
            [sys.executable, "-m", "ledger_app.cli", "dev", "--api-port", "0"],
            cwd=folder,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"ledger dev is already running in {folder / '.ledger'} (pid {proc.pid})" in second.stdout
        assert not _port_free(port)

        pids = _stack_pids(proc, folder)
        assert len(pids) >= 9  # dev, watchdog, PostgreSQL, Tansu, 2 sandboxes, API, intake, relay, ...
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = _wait_gone(pids, timeout_s=90)
    assert left == set(), f"left behind: {[psutil.Process(p).cmdline() for p in left]}"
    assert _port_free(port)
    # The folder is free again: a new `ledger dev` would start (its lock is released).
    from ledger_app.dev.lock import DevLock

    DevLock(folder / ".ledger").acquire().release()


async def _place(client: httpx.AsyncClient, env: dict[str, str], n: int) -> list[str]:
    ids = []
    for _ in range(n):
        body = place_order_body(f"restart-{uuid.uuid4().hex[:10]}")
        response = await client.post(
            f"{env['LEDGER_API_URL']}/api/v3/orders",
            json=body,
            headers={"Authorization": f"Bearer {env['LEDGER_TOKEN']}"},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["data"]["id"])
    return ids


def _all_there(state: dict[str, Any], ids: list[str]) -> set[str]:
    text = str(state)
    return {i for i in ids if i not in text}


async def _missing_at_sandboxes(
    client: httpx.AsyncClient, env: dict[str, str], ids: list[str]
) -> dict[str, set[str]]:
    omneo = (await client.get(f"{env['LEDGER_OMNEO_SANDBOX_URL']}/_sandbox/state")).json()
    omnisend = (await client.get(f"{env['LEDGER_OMNISEND_SANDBOX_URL']}/_sandbox/state")).json()
    return {"omneo": _all_there(omneo, ids), "omnisend": _all_there(omnisend, ids)}


async def _until_at_both_sandboxes(client: httpx.AsyncClient, env: dict[str, str], ids: list[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 240
    while any((missing := await _missing_at_sandboxes(client, env, ids)).values()):
        assert loop.time() < deadline, missing
        await asyncio.sleep(1.0)


async def _calls_about(client: httpx.AsyncClient, env: dict[str, str], ids: list[str]) -> dict[str, int]:
    """How many requests each sandbox received that mention one of `ids`."""
    counts = {}
    for name in ("OMNEO", "OMNISEND"):
        data = (await client.get(f"{env[f'LEDGER_{name}_SANDBOX_URL']}/_sandbox/requests")).json()
        entries = data if isinstance(data, list) else data.get("requests", [])
        counts[name.lower()] = sum(1 for e in entries if any(i in str(e) for i in ids))
    return counts


async def _orders_reach_both_sandboxes_after_a_broker_restart(env: dict[str, str], out: Path) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        before = await _place(client, env, 5)
        await _until_at_both_sandboxes(client, env, before)  # published, consumed, delivered
        calls_before = await _calls_about(client, env, before)
        assert all(calls_before.values()), calls_before
        port = env["LEDGER_KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[-1]
        tansu = next(
            p
            for p in psutil.process_iter(["cmdline"])
            if "--storage-engine" in (cmd := p.info["cmdline"] or []) and f"tcp://127.0.0.1:{port}" in cmd
        )
        tansu.kill()  # Tansu keeps its topics in memory: they are gone with it
        during = await _place(client, env, 5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 240
        while "the Kafka broker is back" not in (text := await asyncio.to_thread(out.read_text)):
            assert loop.time() < deadline, text[-3000:]
            await asyncio.sleep(0.5)
        assert "re-published" in text, text[-3000:]
        after = await _place(client, env, 5)
        await _until_at_both_sandboxes(client, env, before + during + after)
        # The re-published events of the orders delivered before were deduped (event id): no new call.
        assert await _calls_about(client, env, before) == calls_before
    conn = await asyncpg.connect(env["LEDGER_DATABASE_URL"])
    try:
        parked = await conn.fetch("SELECT destination, order_id, reason FROM fanout_parked")
    finally:
        await conn.close()
    assert [dict(r) for r in parked] == []


def test_dev_restarts_a_killed_broker_and_orders_placed_before_during_and_after_reach_both_sandboxes(
    tmp_path: Path,
) -> None:
    folder = tmp_path
    out = folder / "dev.out"
    proc = _dev(folder, 0, out)
    try:
        env = _wait_ready(proc, folder, out)
        asyncio.run(_orders_reach_both_sandboxes_after_a_broker_restart(env, out))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out.read_text()[-3000:]

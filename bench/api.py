"""Place-order throughput and latency through the HTTP API, beside the store's direct append.

The API runs as deployed (`ledger api`, its default worker processes: one per core) on a fresh
migrated database. The load comes from `wrk` (a native load generator, in its own process, so
the figures are not those of a Python client competing with the server for the GIL), driven by
a Lua script that gives every request a unique `external_id`: every request places a new order.
In the same run, alternating with the API rounds, the store's direct `EventStore.append` of the
same OrderPlaced event (decided per append, as the service does) at the same concurrency is the
base of the ratio.

    .venv/bin/python bench/api.py [--seconds 10] [--rounds 3] [--concurrency 8 32] [--admin-url URL]

`--admin-url` defaults to LEDGER_BENCH_ADMIN_URL, else the local PostgreSQL. Prints, per
concurrency, throughput, p50 and p99 of each round and their medians, and the ratio HTTP /
direct (targets: c32 >= 0.5x with p99 <= 100 ms; c8 p99 <= 30 ms). Each side also reports the
CPU time it spent per order (the API's processes; the direct side's Python process), the figure
that stays meaningful when other work shares the machine.

Needs `wrk` on PATH (Debian/Ubuntu: `apt-get install -y wrk`; macOS: `brew install wrk`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import decimal
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.api.app import event_registry  # noqa: E402
from ledger.api.auth import TokenStore  # noqa: E402
from ledger.domain.commands import PlaceOrder  # noqa: E402
from ledger.domain.decide import decide  # noqa: E402
from ledger.domain.events import event_data  # noqa: E402
from ledger.store import EventStore, NewEvent, create_pool  # noqa: E402
from ledger_app.dev.broker import free_port, wait_for_port  # noqa: E402
from ledger_app.migrations import migrate_all  # noqa: E402
from ledger_kernel.settings import StoreSettings  # noqa: E402
from ledger_kernel.wire.streams import stream_id_of  # noqa: E402

ORDER: dict[str, Any] = {
    "profile_id": "9332c9b2-e31c-4d49-8ec3-62a9466d339c",
    "currency": "AUD",
    "total": 199.95,
    "status": "pending",
    "items": [
        {
            "name": "Trench Coat",
            "product_variant_id": 441200,
            "quantity": 1,
            "price_current": 199.95,
            "price_sell": 199.95,
            "price_original": 199.95,
        }
    ],
}

#: wrk's script: a unique external id per request (thread id and counter), and at the end one
#: JSON line with the figures (latencies in microseconds). Non-2xx answers are counted by wrk.
WRK_SCRIPT = """
local counter = 0
local prefix = "x"
local threads = {}
function setup(thread)
  thread:set("tid", tostring(#threads + 1))
  table.insert(threads, thread)
end
function init(args)
  prefix = args[1] .. "-" .. tid .. "-"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[2]
end
function request()
  counter = counter + 1
  local body = string.format(BODY_TEMPLATE, prefix .. counter)
  return wrk.format(nil, "/api/v3/orders", nil, body)
end
function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def wrk_script() -> str:
    """The Lua script with the order body (its `external_id` a `%s` placeholder) inlined."""
    template = json.dumps({**ORDER, "external_id": "EXTERNAL"}).replace("%", "%%").replace("EXTERNAL", "%s")
    return f"local BODY_TEMPLATE = {json.dumps(template)}\n{WRK_SCRIPT}"


def run_wrk(
    wrk: str, script: Path, url: str, token: str, *, seconds: float, concurrency: int
) -> dict[str, Any]:
    """One wrk run; its figures (requests/s, p50/p99 in ms, non-2xx)."""
    run = subprocess.run(
        [
            wrk,
            f"-t{min(2, concurrency)}",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
            "--",
            uuid.uuid4().hex[:12],
            token,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("{")][-1]
    figures = json.loads(line)
    return {
        "rps": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "non2xx": figures["non2xx"],
        "socket_errors": figures["socket_errors"],
    }


async def store_load(dsn: str, seconds: float, writers: int) -> dict[str, Any]:
    """Direct `EventStore.append` of the same OrderPlaced event (decided per append), `writers` at once."""
    cpu = time.process_time()
    pool = await create_pool(dsn, StoreSettings(pool_min_size=writers, pool_max_size=writers))
    store = EventStore(pool, event_registry())
    command = PlaceOrder.model_validate(json.loads(json.dumps(ORDER), parse_float=decimal.Decimal))
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            order_id = uuid.uuid4()
            now = datetime.datetime.now(datetime.UTC)
            event = decide(command, None, now=now, ids=partial(_same, order_id))[0]
            new = NewEvent(
                type=event.type,
                data=event_data(event),
                metadata={"actor": "bench"},
                schema_version=event.schema_version,
            )
            await store.append(stream_id_of(order_id), [new], 0)
            latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    await store.aclose()
    await pool.close()
    ordered = sorted(latencies)
    return {
        "cpu_ms_per_order": (time.process_time() - cpu) * 1000 / max(len(latencies), 1),
        "rps": len(latencies) / elapsed,
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
    }


def start_api(dsn: str, port: int, workers: int | None) -> subprocess.Popen[bytes]:
    """`ledger api` as deployed (default workers unless `workers` is given)."""
    env = {**os.environ, "LEDGER_DATABASE_URL": dsn, "LEDGER_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "ledger_app.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return subprocess.Popen(command, cwd=ROOT, env=env)


def _same(order_id: uuid.UUID) -> uuid.UUID:
    return order_id


def _cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by process `root` and its children (Linux /proc).

    Per request, it is what the API costs whatever else the machine runs: on a shared machine
    throughput and latency say more about the neighbours than about the API."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if root in (pid, ppid):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def median(rounds: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rounds))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating API / direct rounds (medians)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--workers", type=int, default=None, help="API workers (default: the API's own)")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("LEDGER_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench/api.py needs wrk, a native HTTP load generator, on PATH:\n"
            "  Debian/Ubuntu: apt-get install -y wrk    macOS: brew install wrk",
            file=sys.stderr,
        )
        raise SystemExit(2)

    name = f"ledger_bench_{os.getpid()}"
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_db(args.admin_url, name)
    server: subprocess.Popen[bytes] | None = None
    results: dict[int, dict[str, list[dict[str, Any]]]] = {
        c: {"api": [], "direct": []} for c in args.concurrency
    }
    try:
        await migrate_all(dsn)
        pool = await create_pool(dsn, StoreSettings(pool_min_size=1, pool_max_size=1))
        token, _ = await TokenStore(pool).create("bench", ["orders:write"])
        await pool.close()
        port = free_port()
        server = start_api(dsn, port, args.workers)
        wait_for_port("127.0.0.1", port, timeout_s=30)
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "place_order.lua"
            script.write_text(wrk_script())
            run_wrk(
                wrk, script, url, token, seconds=2, concurrency=8
            )  # warm-up: every worker's pool and caches
            for round_no in range(args.rounds):
                for concurrency in args.concurrency:
                    cpu = _cpu_seconds(server.pid)
                    over_http = run_wrk(
                        wrk, script, url, token, seconds=args.seconds, concurrency=concurrency
                    )
                    requests = over_http["rps"] * args.seconds
                    over_http["cpu_ms_per_order"] = (_cpu_seconds(server.pid) - cpu) * 1000 / max(requests, 1)
                    direct = await store_load(dsn, args.seconds, concurrency)
                    results[concurrency]["api"].append(over_http)
                    results[concurrency]["direct"].append(direct)
                    figures = {"api": over_http, "direct": direct}
                    rounded = {k: {f: round(v, 1) for f, v in side.items()} for k, side in figures.items()}
                    print(
                        json.dumps({"round": round_no + 1, "concurrency": concurrency, **rounded}), flush=True
                    )
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    print(f"\nmedians of {args.rounds} rounds of {args.seconds:.0f} s (wrk out of process, unique orders):")
    for concurrency, sides in results.items():
        api, base = sides["api"], sides["direct"]
        ratio = median(api, "rps") / median(base, "rps")
        print(
            f"  c{concurrency}: API {median(api, 'rps'):.0f} orders/s "
            f"(p50 {median(api, 'p50_ms'):.1f} ms, p99 {median(api, 'p99_ms'):.1f} ms, "
            f"non-2xx {sum(r['non2xx'] for r in api)}, {median(api, 'cpu_ms_per_order'):.2f} CPU ms/order), "
            f"direct append {median(base, 'rps'):.0f}/s (p50 {median(base, 'p50_ms'):.1f} ms, "
            f"p99 {median(base, 'p99_ms'):.1f} ms, {median(base, 'cpu_ms_per_order'):.2f} CPU ms/append): "
            f"ratio {ratio:.2f}"
        )
    print("targets: c32 ratio >= 0.5 with p99 <= 100 ms; c8 p99 <= 30 ms")


if __name__ == "__main__":
    asyncio.run(main())

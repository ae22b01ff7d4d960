"""Place-order throughput and latency through the HTTP API, beside the store's direct append rate.

The API runs as in production: a uvicorn subprocess (`ledger_app.api:app_factory`) on a fresh
migrated database; the load generator (httpx, N concurrent clients) runs on the same 2-core
machine, so it competes for CPU with the server: figures are a floor, not a ceiling.

    .venv/bin/python bench/api.py [--seconds 10] [--concurrency 16] [--admin-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

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

ORDER = {
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


def with_db(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def http_load(url: str, token: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    latencies: list[float] = []
    errors = 0
    body = json.dumps(ORDER).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.post("/api/v3/orders", content=body, headers=headers)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 201:
                    errors += 1

        for _ in range(20):  # warm-up
            await client.post("/api/v3/orders", content=body, headers=headers)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return int(len(latencies) / elapsed), latencies, errors


async def store_load(dsn: str, seconds: float, writers: int) -> int:
    """Direct `EventStore.append` of the same OrderPlaced event (decided once per append)."""
    pool = await create_pool(dsn, StoreSettings(pool_min_size=writers, pool_max_size=writers))
    store = EventStore(pool, event_registry())
    command = PlaceOrder.model_validate(
        json.loads(json.dumps(ORDER), parse_float=__import__("decimal").Decimal)
    )
    count = 0
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            order_id = uuid.uuid4()

            def ids(oid: uuid.UUID = order_id) -> uuid.UUID:
                return oid

            event = decide(
                command,
                None,
                now=__import__("datetime").datetime.now(__import__("datetime").UTC),
                ids=ids,
            )[0]
            new = NewEvent(
                type=event.type,
                data=event_data(event),
                metadata={"actor": "bench"},
                schema_version=event.schema_version,
            )
            await store.append(stream_id_of(order_id), [new], 0)
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    await store.aclose()
    await pool.close()
    return int(count / elapsed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("LEDGER_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()

    name = f"ledger_bench_{os.getpid()}"
    admin = await asyncpg.connect(args.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_db(args.admin_url, name)
    server: subprocess.Popen[bytes] | None = None
    try:
        await migrate_all(dsn)
        pool = await create_pool(dsn, StoreSettings(pool_min_size=1, pool_max_size=1))
        token, _ = await TokenStore(pool).create("bench", ["orders:write"])
        await pool.close()
        port = free_port()
        env = {**os.environ, "LEDGER_DATABASE_URL": dsn, "LEDGER_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen(  # noqa: ASYNC220 - spawned once, before any load
            [
                sys.executable,
                "-m",
                "uvicorn",
                "ledger_app.api:app_factory",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
        )
        wait_for_port("127.0.0.1", port, timeout_s=20)
        rps, latencies, errors = await http_load(
            f"http://127.0.0.1:{port}", token, args.seconds, args.concurrency
        )
        server.terminate()
        server.wait(timeout=10)
        server = None
        direct = await store_load(dsn, args.seconds, args.writers)
    finally:
        if server is not None:
            server.kill()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    print(
        f"HTTP place-order: {rps} req/s over {args.seconds:.0f}s, concurrency {args.concurrency}, "
        f"{len(latencies)} requests, {errors} non-201"
    )
    print(
        f"  latency p50 {pct(latencies, 0.50):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, "
        f"mean {statistics.mean(latencies) * 1000:.1f} ms"
    )
    print(f"store direct append (OrderPlaced, {args.writers} writers): {direct} appends/s")
    print(f"ratio HTTP / direct: {rps / direct:.2f}")


if __name__ == "__main__":
    asyncio.run(main())

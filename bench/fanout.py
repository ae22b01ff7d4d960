"""Fan-out throughput and coalescing, against real Postgres, a real broker and the sandboxes.

Prints:
1. events/s one worker maps and delivers (one event per order, so one call per event) to a
   sandbox without a rate limit, for Omnisend and Omneo;
2. destination calls per event while the destination is behind (a backlog of several events
   per order is waiting): Omnisend coalesces an order's pending events into one call.

Needs: PostgreSQL at LEDGER_BENCH_DATABASE_URL (an admin URL; default the local server,
user postgres) and a broker at LEDGER_KAFKA_BOOTSTRAP_SERVERS (default: a Tansu started here).
Run: `.venv/bin/python bench/fanout.py [--orders 2000] [--backlog-orders 300] [--events-per-order 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from asyncio.subprocess import DEVNULL
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumers.fanout.worker import run_worker  # noqa: E402
from ledger.observability import Metrics  # noqa: E402
from ledger.store import migrate  # noqa: E402
from ledger.store.pool import init_connection  # noqa: E402
from tests.harness.kafka import create_topic, produce  # noqa: E402
from tests.integration.fanout.support import Sandbox, make_settings  # noqa: E402
from tests.unit.mapping.story import OrderStory, dumps  # noqa: E402

ADMIN_URL = os.environ.get("LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    name = f"ledger_bench_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        await migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.contextmanager
def broker() -> Iterator[str]:
    named = os.environ.get("LEDGER_KAFKA_BOOTSTRAP_SERVERS")
    if named:
        yield named
        return
    from ledger.dev.broker import TansuBroker

    with TansuBroker() as b:
        yield b.bootstrap_servers


_SANDBOX = """
import asyncio, sys
from consumers.sandbox import OmneoConfig, OmnisendConfig, create_omneo_app, create_omnisend_app
from consumers.sandbox.serving import serve_app
vendor, port = sys.argv[1], int(sys.argv[2])
app = create_omneo_app(OmneoConfig(rate_limit_per_minute=None)) if vendor == "omneo" else create_omnisend_app(
    OmnisendConfig(rate_limit_per_minute=None))
asyncio.run(serve_app(app, "127.0.0.1", port))
"""


@contextlib.asynccontextmanager
async def sandbox_process(vendor: str) -> AsyncIterator[Sandbox]:
    """The sandbox in its own process, so its CPU is not the worker's (2-core machine)."""
    from consumers.sandbox import OmneoConfig, OmnisendConfig, create_omneo_app, create_omnisend_app
    from ledger.dev.broker import free_port, wait_for_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SANDBOX, vendor, str(port), cwd=ROOT, stdout=DEVNULL, stderr=DEVNULL
    )
    await asyncio.to_thread(wait_for_port, "127.0.0.1", port)
    app = create_omneo_app(OmneoConfig()) if vendor == "omneo" else create_omnisend_app(OmnisendConfig())
    try:
        yield Sandbox(app, f"http://127.0.0.1:{port}", app.config.token)
    finally:
        proc.terminate()
        await proc.wait()


def _stub(destination: str) -> httpx.MockTransport:
    """A destination that answers instantly: what the worker itself costs per event."""

    def answer(request: httpx.Request) -> httpx.Response:
        if destination == "omneo":
            return httpx.Response(200, json={"data": {"id": 1}})
        return httpx.Response(200, json={"orderID": "x"})

    return httpx.MockTransport(answer)


async def run_case(
    destination: str, db_url: str, bootstrap: str, stories: list[OrderStory], *, stub: bool = False
) -> tuple[int, int, float]:
    """Publish every story's events, then time one worker draining them; (events, calls, seconds)."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, partitions=6)
    envelopes = [e for s in stories for e in s.envelopes]
    await produce(bootstrap, topic, [(e["order_id"].encode(), dumps(e)) for e in envelopes])
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=30, init=init_connection)
    async with sandbox_process(destination) as box:
        settings = make_settings(
            db_url,
            bootstrap,
            topic,
            **{destination: box},  # type: ignore[arg-type]
            rate_per_minute=10_000_000.0,
        )
        stop, started, metrics = asyncio.Event(), asyncio.Event(), Metrics()
        task = asyncio.create_task(
            run_worker(
                destination,
                settings,
                stop=stop,
                pool=pool,
                metrics=metrics,
                started=started,
                transport=_stub(destination) if stub else None,
            )
        )
        await started.wait()
        # Timed from the first delivered event (group join is not the worker's throughput).
        await _until(pool, 1, 0.01)
        t0 = time.perf_counter()
        done = await _until(pool, len(envelopes), 0.02)
        elapsed = time.perf_counter() - t0
        stop.set()
        await task
        calls = int(
            sum(
                s.value
                for m in metrics.outbound_calls.collect()
                for s in m.samples
                if s.name.endswith("_total")
            )
        )
    await pool.execute("TRUNCATE fanout_inbox, fanout_delivery, fanout_parked")
    await pool.close()
    return done, calls, elapsed


async def _until(pool: asyncpg.Pool, n: int, interval: float) -> int:
    """Poll the inbox (the worker's own record of handled events) until it holds `n` rows."""
    for _ in range(100_000):
        done = int(await pool.fetchval("SELECT count(*) FROM fanout_inbox"))
        if done >= n:
            return done
        await asyncio.sleep(interval)
    raise TimeoutError(f"inbox never reached {n}")


def _placed(n: int) -> list[OrderStory]:
    out = []
    for _ in range(n):
        s = OrderStory()
        s.place()
        out.append(s)
    return out


def _busy(n: int, per_order: int) -> list[OrderStory]:
    out = []
    for _ in range(n):
        s = OrderStory()
        s.place()
        steps = [partial(s.update, status="processing"), partial(s.pay, "20.00")]
        steps += [partial(s.ship, "S1", "L1"), partial(s.ship, "S2", "L2")]
        for step in steps[: per_order - 1]:
            step()
        out.append(s)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--backlog-orders", type=int, default=300)
    parser.add_argument("--events-per-order", type=int, default=5)
    args = parser.parse_args()
    with broker() as bootstrap:
        async with database() as db_url:
            print(f"fan-out bench: {os.cpu_count()} CPUs, broker {bootstrap}")
            for dest in ("omnisend", "omneo"):
                for stub in (False, True):
                    events, calls, secs = await run_case(
                        dest, db_url, bootstrap, _placed(args.orders), stub=stub
                    )
                    where = "instant stub " if stub else "sandbox (own process)"
                    print(
                        f"  throughput {dest:8s} -> {where:22s}: {events} events, {calls} calls in {secs:.2f} s"
                        f" = {events / secs:,.0f} events/s"
                    )
            stories = _busy(args.backlog_orders, args.events_per_order)
            events, calls, secs = await run_case("omnisend", db_url, bootstrap, stories)
            print(
                f"  backlog omnisend  : {events} events of {len(stories)} orders"
                f" ({args.events_per_order}/order) -> {calls} calls = {calls / events:.2f} calls/event"
                f" (1.00 without coalescing; {events / secs:,.0f} events/s)"
            )


if __name__ == "__main__":
    asyncio.run(main())

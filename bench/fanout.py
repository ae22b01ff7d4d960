"""Fan-out throughput and coalescing, against real Postgres, a real broker and the sandboxes.

Prints:
1. events/s one worker maps and delivers (one event per order, so one call per event) to a
   sandbox without a rate limit, for Omnisend and Omneo;
2. destination calls per event while the destination is behind (a backlog of several events
   per order is waiting): Omnisend coalesces an order's pending events into one call;
3. `ledger fanout replay` of `--replay-orders` orders (default 5,000) to Omnisend: calls per
   order with v3 batches (`batch_size` orders per batch) against the raw baseline of one call
   per order in the same run, and what each takes at Omnisend's 400 requests/minute budget.

Needs: PostgreSQL at LEDGER_BENCH_DATABASE_URL (an admin URL; default the local server,
user postgres) and a broker at LEDGER_KAFKA_BOOTSTRAP_SERVERS (default: a Tansu started here).
Run: `.venv/bin/python bench/fanout.py [--orders 2000] [--backlog-orders 300] [--events-per-order 5]
[--replay-orders 5000] [--only replay]` (the replay part needs no broker)
with the runtime plus the `dev` extra (`pip install -e '.[dev]'`); it imports nothing of `tests/`.
Envelopes are built with the domain and written by the fan-out's own `Envelope.to_bytes`, the
relay's byte format.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumers.fanout.mapping_types import Envelope  # noqa: E402
from consumers.fanout.operations import replay  # noqa: E402
from consumers.fanout.worker import run_worker  # noqa: E402
from ledger.api.app import event_registry  # noqa: E402
from ledger.domain import (  # noqa: E402
    Command,
    DispatchShipment,
    Order,
    PlaceOrder,
    RecordPayment,
    UpdateOrder,
    decide,
    event_data,
    evolve,
)
from ledger.relay.publisher import ensure_topic  # noqa: E402
from ledger.store import EventStore, NewEvent  # noqa: E402
from ledger.store.pool import init_connection  # noqa: E402
from ledger_app.migrations import migrate_all  # noqa: E402
from ledger_kernel.observability import Metrics  # noqa: E402
from ledger_kernel.settings import DestinationSettings, Settings  # noqa: E402

ADMIN_URL = os.environ.get("LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    name = f"ledger_bench_{os.getpid()}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, query = ADMIN_URL.partition("?")  # a unix-socket DSN keeps its `?host=`
    url = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        await migrate_all(url)
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
    from ledger_app.dev.broker import TansuBroker

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


@dataclass(frozen=True)
class Sandbox:
    """Where a sandbox listens and the credential it accepts."""

    url: str
    token: str


class Story:
    """One order's events as `orders.events` values: decided, folded and enveloped like the relay's."""

    START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    _positions = iter(range(1, 1 << 62))

    _numbers = iter(range(1001, 1 << 62))

    def __init__(self) -> None:
        self.now = self.START
        self.order: Order | None = None
        self.values: list[tuple[bytes, bytes]] = []
        self.events: list[NewEvent] = []

    def run(self, command: Command) -> None:
        self.now += timedelta(minutes=1)
        for event in decide(command, self.order, now=self.now, ids=uuid.uuid4):
            version = 1 if self.order is None else self.order.version + 1
            self.order = evolve(self.order, event, version=version, recorded_at=self.now)
            envelope = Envelope(
                event_id=str(uuid.uuid4()),
                order_id=str(self.order.id),
                version=version,
                position=next(self._positions),
                type=event.type,
                data=event_data(event),
                recorded_at=self.now,
                order=self.order,
                metadata={"actor": "bench"},
            )
            self.values.append((envelope.order_id.encode(), envelope.to_bytes()))
            self.events.append(
                NewEvent(type=event.type, data=event_data(event), event_id=uuid.UUID(envelope.event_id))
            )

    def place(self) -> None:
        items = [
            {
                "line_id": f"L{i}",
                "name": f"Item {i}",
                "quantity": 1,
                "price_sell": Decimal("10.00"),
                "price_current": Decimal("10.00"),
                "price_original": Decimal("10.00"),
                "sku": f"SKU-{i}",
                "product_id": f"P{i}",
                "product_variant_id": 1000 + i,
            }
            for i in (1, 2)
        ]
        self.run(
            PlaceOrder.model_validate(
                {
                    "external_id": str(next(self._numbers)),
                    "currency": "USD",
                    "total": Decimal("20.00"),
                    "subtotal": Decimal("20.00"),
                    "email": "ann@example.com",
                    "first_name": "Ann",
                    "profile_id": "9332c9b2-e31c-4d49-8ec3-62a9466d339c",
                    "shipping_address": {"country_code": "US", "city": "Austin", "postal_code": "73301"},
                    "items": items,
                }
            )
        )

    def step(self, n: int) -> None:
        """The `n`th step after placing: status, payment, then one shipment per line."""
        commands: list[Command] = [
            UpdateOrder.model_validate({"status": "processing"}),
            RecordPayment(kind="captured", amount=Decimal("20.00")),
            *(self._shipment(f"S{i}", f"L{i}") for i in (1, 2)),
        ]
        self.run(commands[n])

    @staticmethod
    def _shipment(shipment_id: str, line_id: str) -> DispatchShipment:
        return DispatchShipment.model_validate(
            {
                "shipment_id": shipment_id,
                "lines": [{"line_id": line_id, "quantity": 1}],
                "carrier": "UPS",
                "tracking_code": f"TRK-{shipment_id}",
                "tracking_url": f"https://track.example.com/{shipment_id}",
                "location_id": "WH1",
            }
        )


def make_settings(database_url: str, bootstrap: str, topic: str, destination: str, box: Sandbox) -> Settings:
    """No rate limit worth the name (the bench measures the worker), a consumer group of its own,
    single calls (Omnisend batches are measured by the replay part)."""
    settings = Settings(database_url=database_url, kafka_bootstrap_servers=bootstrap)
    settings.kafka.events_topic = topic
    dest = DestinationSettings(
        base_url=box.url,
        token=box.token,
        rate_per_minute=10_000_000.0,
        timeout_s=2.0,
        max_attempts=6,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        group_id=f"bench-{destination}-{uuid.uuid4().hex[:8]}",
        # The single-call path (what the worker does for live traffic); batches are the replay part's.
        batch_size=1,
    )
    setattr(settings, destination, dest)
    return settings


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) pairs and wait for every acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent: list[Any] = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def sandbox_process(vendor: str) -> AsyncIterator[Sandbox]:
    """The sandbox in its own process, so its CPU is not the worker's (2-core machine)."""
    from consumers.sandbox import OmneoConfig, OmnisendConfig
    from ledger_app.dev.broker import free_port, wait_for_port

    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SANDBOX, vendor, str(port), cwd=ROOT, stdout=DEVNULL, stderr=DEVNULL
    )
    await asyncio.to_thread(wait_for_port, "127.0.0.1", port)
    token = OmneoConfig().token if vendor == "omneo" else OmnisendConfig().token
    try:
        yield Sandbox(f"http://127.0.0.1:{port}", token)
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
    destination: str, db_url: str, bootstrap: str, stories: list[Story], *, stub: bool = False
) -> tuple[int, int, float]:
    """Publish every story's events, then time one worker draining them; (events, calls, seconds)."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, topic, 6, 30_000)
    envelopes = [value for s in stories for value in s.values]
    await produce(bootstrap, topic, envelopes)
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=30, init=init_connection)
    async with sandbox_process(destination) as box:
        settings = make_settings(db_url, bootstrap, topic, destination, box)
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


OMNISEND_BUDGET_PER_MINUTE = 400


async def replay_case(db_url: str, batch_size: int, orders: int) -> tuple[int, int, float]:
    """Replay the last `orders` orders of the log to a fresh Omnisend sandbox; (orders, calls, seconds)."""
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=10, init=init_connection)
    await pool.execute("TRUNCATE fanout_inbox, fanout_delivery, fanout_parked, fanout_categories")
    try:
        async with sandbox_process("omnisend") as box:
            settings = Settings(database_url=db_url)
            # No rate limit (the figure that matters is calls); polls as fast as a local sandbox allows.
            settings.omnisend = DestinationSettings(
                base_url=box.url,
                token=box.token,
                rate_per_minute=10_000_000.0,
                batch_size=batch_size,
                batch_poll_s=0.02,
                backoff_initial_s=0.05,
                backoff_max_s=0.5,
            )
            first = int(
                await pool.fetchval(
                    "SELECT min(p) FROM (SELECT min(position) AS p FROM events GROUP BY stream_id"
                    " ORDER BY p DESC LIMIT $1) AS last",
                    orders,
                )
            )
            t0 = time.perf_counter()
            summary = await replay(
                settings, pool, destination="omnisend", from_position=first, metrics=Metrics()
            )
            elapsed = time.perf_counter() - t0
    finally:
        await pool.close()
    return summary["orders"], summary["calls"], elapsed


async def replay_bench(db_url: str, orders: int, baseline: int = 500) -> None:
    """Calls per order of a replay, batched against one call per order, and both at 400/min."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4, init=init_connection)
    store = EventStore(pool, event_registry())
    try:
        for _ in range(orders):
            story = Story()
            story.place()
            story.step(1)  # paid: the replayed state is more than the placement
            await store.append(f"order-{story.order.id if story.order else ''}", story.events, 0)
    finally:
        await store.aclose()
        await pool.close()
    rows = []
    # The baseline is one call per order by construction; it runs on at most `baseline` orders
    # so the bench stays short, and its figures are per order.
    for label, size, n in (
        ("v3 batches of 500", 500, orders),
        ("one call per order (raw baseline)", 1, min(orders, baseline)),
    ):
        done, calls, secs = await replay_case(db_url, size, n)
        per_order = calls / done
        at_budget_s = per_order * orders / OMNISEND_BUDGET_PER_MINUTE * 60
        rows.append(per_order)
        print(
            f"  replay omnisend {label:34s}: {done} orders -> {calls} calls = {per_order:.3f} calls/order"
            f" ({secs / done * 1000:.1f} ms/order against the local sandbox); {orders} orders at"
            f" 400 requests/min: {at_budget_s:,.0f} s of budget"
        )
    print(
        f"  replay omnisend ratio: {rows[1] / rows[0]:.0f}x fewer calls per order with batches"
        " (the budget time excludes Omnisend's own run of each batch, which it does not document)"
    )


def _placed(n: int) -> list[Story]:
    out = []
    for _ in range(n):
        s = Story()
        s.place()
        out.append(s)
    return out


def _busy(n: int, per_order: int) -> list[Story]:
    out = []
    for _ in range(n):
        s = Story()
        s.place()
        for step in range(min(per_order - 1, 4)):
            s.step(step)
        out.append(s)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--backlog-orders", type=int, default=300)
    parser.add_argument("--events-per-order", type=int, default=5)
    parser.add_argument("--replay-orders", type=int, default=5000)
    parser.add_argument("--only", choices=["replay"], default=None)
    args = parser.parse_args()
    if args.only == "replay":
        async with database() as db_url:
            print(f"fan-out bench (replay only): {os.cpu_count()} CPUs")
            await replay_bench(db_url, args.replay_orders)
        return
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
            await replay_bench(db_url, args.replay_orders)


if __name__ == "__main__":
    asyncio.run(main())

"""The fan-out worker process: a FastStream KafkaBroker, one consumer group per destination.

Why a batch subscriber with AckPolicy.MANUAL: offsets are committed only after every event of
the fetched batch has a recorded outcome (delivered, coalesced, parked or skipped) in Postgres
(never auto-commit-before-processing, docs/architecture.md#fanout), and a batch lets one order's pending events
coalesce into one call (Omnisend PUT: only the latest state matters). Orders in a batch are
delivered concurrently, each order's events in log order (same key = same partition). A fetch
holding at least `batch_min_orders` orders (a backlog) goes to Omnisend in v3 batches instead
(`Deliverer.handle_many`, docs/connectors.md#omnisend-batches).
401/403 halts the destination: nothing more is committed, the worker exits (code 3) instead of
retry-storming. SIGTERM: calls in flight finish, no new call starts (nor a retry or rate-limit
wait goes on); a batch left unfinished is not committed and comes back after restart (the
inbox dedupes what it did), finished ones are committed, the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
from aiokafka.errors import CommitFailedError, KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from consumers.fanout.budget import Closing, SharedRateBudget
from consumers.fanout.delivery import Deliverer, Halted, Item
from consumers.fanout.delivery_store import FanoutStore
from consumers.fanout.destinations import build_destination
from consumers.fanout.privacy import opener_from_settings
from ledger.relay.topics import forbid_topic_auto_creation, wait_for_topic
from ledger_kernel.observability import METRICS, Metrics, get_logger, serve_metrics
from ledger_kernel.settings import DestinationSettings, Settings

__all__ = ["EXIT_HALTED", "destination_settings", "run_worker"]

log = get_logger(__name__)

EXIT_HALTED = 3
MAX_RECORDS = 500
ORDER_CONCURRENCY = 16


def destination_settings(settings: Settings, destination: str) -> DestinationSettings:
    if destination == "omneo":
        return settings.omneo
    if destination == "omnisend":
        return settings.omnisend
    raise ValueError(f"unknown destination {destination!r} (omneo or omnisend)")


async def _deliver_batch(deliverer: Deliverer, records: tuple[Any, ...]) -> None:
    """Group by order (Kafka key, else the envelope's order id), deliver groups concurrently."""
    groups: OrderedDict[str, list[Item]] = OrderedDict()
    for record in records:
        fallback = f"{record.topic}:{record.partition}:{record.offset}"
        item = Item.from_raw(record.value or b"", fallback_id=fallback)
        key = record.key.decode("utf-8", "replace") if record.key else None
        order_id = key or (item.env.order_id if item.env is not None else fallback)
        groups.setdefault(order_id, []).append(item)
    if deliverer.batches and len(groups) >= max(2, deliverer.settings.batch_min_orders):
        # A backlog: the orders' writes go in Omnisend batches, each order's outcome its own.
        await deliverer.handle_many(list(groups.items()))
        return
    # Each order in delivery holds a pool connection (its lock) and briefly needs another for
    # the shared rate budget: at least one must stay free, or a small pool would deadlock.
    gate = asyncio.Semaphore(max(1, min(ORDER_CONCURRENCY, deliverer.store.pool.get_max_size() - 1)))

    async def one(order_id: str, items: list[Item]) -> None:
        async with gate:
            await deliverer.handle(order_id, items)

    results = await asyncio.gather(*(one(o, i) for o, i in groups.items()), return_exceptions=True)
    for result in results:
        if isinstance(result, Halted | Closing):
            raise result
    for result in results:
        if isinstance(result, BaseException):
            raise result


HALT_POLL_S = 5.0
"""How often a halted worker looks whether an operator lifted the halt."""


async def _wait_while_halted(
    store: FanoutStore, destination: str, stop: asyncio.Event, metrics: Metrics
) -> bool:
    """Wait (consuming nothing) while the destination is halted; False if stopped meanwhile.

    Why: a halt is stored with the destination's state, so a restart (compose restarts an
    exited worker) waits for the operator's `ledger fanout resume` instead of looping through
    the same 401/403 again; the gauge lets an alert fire while it waits.
    """
    halt = await store.current_halt()
    if halt is None:
        metrics.fanout_halted.labels(destination).set(0)
        return True
    metrics.fanout_halted.labels(destination).set(1)
    log.error("destination is halted; waiting for `ledger fanout resume`", destination=destination, **halt)
    while halt is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HALT_POLL_S)
        if stop.is_set():
            return False
        halt = await store.current_halt()
    log.info("halt lifted; starting", destination=destination)
    metrics.fanout_halted.labels(destination).set(0)
    return True


async def run_worker(
    destination: str,
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    pool: asyncpg.Pool | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics = METRICS,
    started: asyncio.Event | None = None,
    topic: str | None = None,
    after_success: Callable[[], None] | None = None,
) -> int:
    """Run one destination's worker until `stop` is set (0) or the destination halts (3).

    `after_success` runs right after each 2xx, before its outcome is recorded: the seam where
    a fault test injects a crash (production passes nothing and reads no test switch).
    """
    dest = destination_settings(settings, destination)
    stop = stop or asyncio.Event()
    closing = asyncio.Event()
    halted: list[Halted] = []
    own_pool = pool is None
    if pool is None:
        from ledger.store.pool import create_pool

        pool = await create_pool(
            settings.database_url, settings.store, application_name=f"fanout-{destination}"
        )
    adapter, http = build_destination(destination, dest, transport=transport, pool=pool)
    store = FanoutStore(pool, destination)
    deliverer = Deliverer(
        adapter,
        store,
        dest,
        metrics,
        budget=SharedRateBudget(pool, destination, dest.rate_per_minute),
        closing=closing,
        after_success=after_success,
        open_envelope=opener_from_settings(pool, settings),
    )
    metrics.parked_orders.labels(destination).set(await store.parked_count())
    if not await _wait_while_halted(store, destination, stop, metrics):
        await http.aclose()
        if own_pool:
            await pool.close()
        return EXIT_HALTED

    events_topic = topic or settings.kafka.events_topic
    forbid_topic_auto_creation()  # a subscription must never create the relay's topic
    broker = KafkaBroker(settings.bootstrap_server_list, graceful_timeout=30.0, logger=None)
    subscriber = broker.subscriber(
        events_topic,
        batch=True,
        group_id=dest.group_id or f"ledger-fanout-{destination}",
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        # An exactly-once relay's aborted transactions are not events (ledger/relay/eos.py);
        # with an at-least-once relay (no transactions) this reads what read_uncommitted would.
        isolation_level="read_committed",
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        max_records=MAX_RECORDS,
        batch_timeout_ms=100,
        # A dead worker's partitions move to a live one after ~6 s instead of 10 s (heartbeats
        # run beside the handler; long retry loops are bounded by max_poll_interval_ms).
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
    )

    @subscriber
    async def handle(msg: KafkaMessage) -> None:
        if closing.is_set():
            return  # shutting down or halted: leave it uncommitted
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        try:
            await _deliver_batch(deliverer, records)
        except Halted as exc:
            log.error(
                "destination refused credentials; stopping",
                destination=destination,
                status=exc.outcome.status,
            )
            await store.halt(exc.outcome.status, str(exc), exc.outcome.body)
            metrics.fanout_halted.labels(destination).set(1)
            halted.append(exc)
            closing.set()
            return
        except Closing:
            return
        except Exception:
            log.exception("batch failed; it will be read again", destination=destination)
            await asyncio.sleep(1.0)
            await msg.nack()
            return
        try:
            await msg.ack()
        except (CommitFailedError, KafkaError) as exc:  # rebalanced: the inbox dedupes the redelivery
            log.warning("offset commit failed", destination=destination, error=str(exc))

    try:
        # The relay creates the topic (configured partitions) and `ledger relay republish` brings
        # a lost one back; a consumer only waits for it. Creating it here would hide a topic the
        # broker lost from the relay, which then could not tell that it must stop.
        if not await wait_for_topic(
            settings.bootstrap_servers,
            events_topic,
            settings.kafka.request_timeout_ms,
            stop=stop,
            on_wait=lambda reason: log.warning(
                "waiting for the events topic", destination=destination, reason=reason
            ),
        ):
            return 0
        await broker.start()
        if started is not None:
            started.set()
        log.info("fan-out worker started", destination=destination, group=dest.group_id)
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(closing.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        # Before stopping: a handler waiting out a retry or a rate-limit window gives up at
        # once instead of holding shutdown for the whole graceful timeout.
        closing.set()
        await broker.stop()
        await http.aclose()
        if own_pool:
            await pool.close()
    return EXIT_HALTED if halted else 0


def main(
    destination: str,
    settings: Settings | None = None,
    *,
    metrics_port: int | None = None,
    after_success: Callable[[], None] | None = None,
) -> int:
    """Process entry: SIGTERM/SIGINT set the stop event; returns the exit code."""
    settings = settings or Settings()
    if metrics_port:
        serve_metrics(metrics_port)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        return await run_worker(destination, settings, stop=stop, after_success=after_success)

    return asyncio.run(run())

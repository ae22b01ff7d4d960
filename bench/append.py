"""Append and replay throughput of the event store against raw asyncpg on the same server.

    .venv/bin/python bench/append.py [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--seconds 3] [--sealing-only]

Creates a scratch database (dropped at the end) with the store's migrations plus a bare
`raw_events` table (same columns, primary key only), then measures, alternating raw and store
runs to share the machine's noise:
- single-event appends at concurrency 1, 8 and 32 (store: one stream per writer, exact expected
  version, through the pool; raw: one INSERT per transaction, on a connection held by the writer
  ("raw conn", the floor and the ratio's base) and through `pool.execute` ("raw pool"));
- batches of 10 and 100 events at concurrency 8 (raw: one INSERT ... SELECT FROM unnest);
- replay of the whole log: `iter_all` (decoded RecordedEvents) and `iter_all_raw` (JSON text)
  beside a raw `SELECT` of the same columns through a cursor.
Prints events/s and the ratios against the targets (c8 single >= 0.7x, batch 100 >= 0.6x,
replay >= 0.5x).

A peer in the same run, on the same server: the python `eventsourcing` library (its PostgreSQL
persistence, in the `dev` extra), run as its docs say. Its single-event `save`s from 1 and 8
threads (each thread its own aggregate) alternate cell by cell with our single-event appends at
concurrency 1 and 8; then its notification log, filled to as many events with the same
payloads, is read in pages of 10,000 (`select_notifications`), alternating with our replays.
Two pairs are compared: undecoded rows (its notifications, JSON bytes, against our
`iter_all_raw`, JSON text) and decoded events (each notification turned into its domain event
by the application's `mapper`, against our `iter_all`, dicts). Every replay cell runs with the
collector's default thresholds and again inside `ledger.store.gc_tuning.relaxed_gc()` (process-wide,
so the peer gets it too). Targets: c8 >= 6x its appends, replay >= 3x its read.

Then personal-data sealing (docs/privacy.md#costs): the same store with and without the codec,
alternating, 8 writers, each placing orders one after another and appending one event per
transaction. "order life": OrderPlaced (customer, two addresses, note), a payment, a shipment,
a details change and a status change per order (2 of 5 events carry personal data), for 1,000
customers: the first sealed round of the order life creates their keys (each new subject's key
is stored by its first append's statement), later rounds find them in the codec's cache.
"placed only": every append is a new order (the worst case). Target for the order life:
sealed >= 0.9x of plain. Beside the rates it prints the CPU per event of each (this process
plus every process of the server, when the server is local and its data directory readable;
median over the rounds), steadier than the rates on a shared machine, and the CPU ratio of the
first round alone ("1st": the key-creating round of the order life). `bench/seal_statement.py`
splits the server's share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from pydantic import BaseModel

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # run as a script from a checkout: make the repository importable
    sys.path.insert(0, _ROOT)

from ledger.store import NO_STREAM, EventRegistry, EventStore, NewEvent, create_pool, migrate  # noqa: E402
from ledger.store.gc_tuning import relaxed_gc  # noqa: E402
from ledger.store.reads import COLUMNS, RAW_COLUMNS  # noqa: E402
from ledger_kernel.settings import StoreSettings  # noqa: E402

RAW_TABLE = """
CREATE TABLE raw_events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id text NOT NULL, version integer NOT NULL, event_id uuid NOT NULL, type text NOT NULL,
    schema_version smallint NOT NULL, data jsonb NOT NULL, metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(), prev_hash bytea, hash bytea NOT NULL
)
"""
RAW_ONE = (
    "INSERT INTO raw_events (stream_id, version, event_id, type, schema_version, data, metadata, prev_hash, hash)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
RAW_MANY = (
    "INSERT INTO raw_events (stream_id, version, event_id, type, schema_version, data, metadata, prev_hash, hash)"
    " SELECT * FROM unnest($1::text[], $2::int[], $3::uuid[], $4::text[], $5::smallint[], $6::jsonb[],"
    " $7::jsonb[], $8::bytea[], $9::bytea[])"
)
TARGETS = {"single c8": 0.7, "batch 100": 0.6, "replay": 0.5, "order life": 0.9}
PEER_TARGETS = {"single c8": 6.0, "replay": 3.0}


class LineAdded(BaseModel):
    type: Literal["LineAdded"] = "LineAdded"
    schema_version: ClassVar[int] = 1


def payload(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    data = {
        "line_id": f"L{i}",
        "sku": f"SKU-{i % 997:05d}",
        "name": "Merino crew neck, navy",
        "quantity": 1 + i % 3,
        "price_sell": 12999,
        "currency": "AUD",
    }
    meta = {"actor": "bench", "source": "bench", "correlation_id": str(uuid.uuid4())}
    return data, meta


class Writer:
    """One concurrent writer: its own stream, appending `batch` events per transaction."""

    def __init__(self, store: EventStore, batch: int) -> None:
        self.store, self.batch = store, batch
        # Raw writers either hold one connection for the whole run or go through the pool.
        self.conn: PoolConnectionProxy | asyncpg.Pool = store.pool
        self.stream = f"bench-{uuid.uuid4()}"
        self.version = 0
        self.counter = 0

    def _events(self) -> list[NewEvent]:
        out = []
        for _ in range(self.batch):
            self.counter += 1
            data, meta = payload(self.counter)
            out.append(NewEvent("LineAdded", data, meta))
        return out

    async def store_append(self) -> None:
        result = await self.store.append(self.stream, self._events(), self.version or NO_STREAM)
        self.version = result.version

    async def raw_append(self) -> None:
        events = self._events()
        if self.batch == 1:
            event = events[0]
            self.version += 1
            await self.conn.execute(
                RAW_ONE, self.stream, self.version, event.event_id, event.type, 1,
                event.data, event.metadata, None, secrets.token_bytes(32),
            )  # fmt: skip
            return
        versions = list(range(self.version + 1, self.version + 1 + len(events)))
        self.version = versions[-1]
        await self.conn.execute(
            RAW_MANY, [self.stream] * len(events), versions, [e.event_id for e in events],
            [e.type for e in events], [1] * len(events), [e.data for e in events],
            [e.metadata for e in events], [None] * len(events), [secrets.token_bytes(32) for _ in events],
        )  # fmt: skip


async def run_cell(
    make: Callable[[Writer], Callable[[], Awaitable[None]]],
    *,
    seconds: float,
    concurrency: int,
    batch: int,
    store: EventStore,
    pool: asyncpg.Pool,
    dedicated: bool = False,
) -> float:
    """Events per second of `concurrency` writers looping for `seconds`.

    With `dedicated`, each raw writer holds its own connection (one round trip per insert, the
    floor); otherwise it uses `pool.execute`, as application code would (asyncpg then also
    sends its reset query at every release). Store writers always go through the pool.
    """
    writers = [Writer(store, batch) for _ in range(concurrency)]
    if dedicated:
        for writer in writers:
            writer.conn = await pool.acquire()
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency

    async def loop(i: int) -> None:
        step = make(writers[i])
        while time.perf_counter() < deadline:
            await step()
            counts[i] += batch

    start = time.perf_counter()
    try:
        await asyncio.gather(*(loop(i) for i in range(concurrency)))
    finally:
        for writer in writers:
            if isinstance(writer.conn, PoolConnectionProxy):
                await pool.release(writer.conn)
    return sum(counts) / (time.perf_counter() - start)


async def replay(
    pool: asyncpg.Pool, store: EventStore, peer: Peer, page: int, rounds: int
) -> dict[str, float]:
    """Events/s of full-log replays: raw cursor fetches, the store's iterators and the peer's
    notification-log reads (undecoded and mapped to domain events), alternating, best of `rounds`;
    all of them once with the collector's default thresholds and once inside `relaxed_gc()`
    (keys suffixed " relaxed gc"): thresholds are process-wide, so both sides get the same."""
    results: dict[str, float] = {}

    async def raw(columns: str) -> int:
        n = 0
        async with pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(f"SELECT {columns} FROM events ORDER BY tx, position")
            while rows := await cursor.fetch(page):
                n += len(rows)
        return n

    async def decoded() -> int:
        return sum([len(p) async for p in store.iter_all(page_size=page)])

    async def raw_text() -> int:
        return sum([len(p) async for p in store.iter_all_raw(page_size=page)])

    cells: dict[str, Callable[[], Awaitable[int]]] = {
        "raw fetch (jsonb decoded)": lambda: raw(COLUMNS),
        "store iter_all": decoded,
        "raw fetch (json text)": lambda: raw(RAW_COLUMNS),
        "store iter_all_raw": raw_text,
        "peer select_notifications": lambda: asyncio.to_thread(peer.read, page, decode=False),
        "peer + mapper.to_domain_event": lambda: asyncio.to_thread(peer.read, page, decode=True),
    }
    for gc_mode in ("", " relaxed gc"):  # the collector's defaults, then `relaxed_gc` for both sides
        for _ in range(rounds):
            for name, fn in cells.items():
                with relaxed_gc() if gc_mode else contextlib.nullcontext():
                    start = time.perf_counter()
                    n = await fn()
                    rate = n / (time.perf_counter() - start)
                results[name + gc_mode] = max(results.get(name + gc_mode, 0.0), rate)
                results[f"{name} count"] = n
    return results


def _libpq_env(dsn: str) -> dict[str, str]:
    """`eventsourcing`'s POSTGRES_* settings for a `postgresql://` URL (TCP or unix socket)."""
    parts = urlsplit(dsn)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    return {
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or query.get("host", "127.0.0.1"),
        "POSTGRES_PORT": str(parts.port or query.get("port", 5432)),
        "POSTGRES_USER": parts.username or query.get("user", "postgres"),
        "POSTGRES_PASSWORD": parts.password or "",
    }


class Basket(Aggregate):
    """The peer's aggregate: one per writing thread."""

    @event("LineAdded")
    def add_line(self, data: dict[str, Any]) -> None:
        """One line added (the same payload as the store's appends)."""


def _peer_saves(app: Application[UUID], basket: Basket, deadline: float, counts: list[int], i: int) -> None:
    """One thread of the peer: one event per `save` until `deadline`."""
    while time.perf_counter() < deadline:
        counts[i] += 1
        basket.add_line(payload(counts[i])[0])
        app.save(basket)


class Peer:
    """The python `eventsourcing` library on the same database, run as its docs say: an
    `Application` with its PostgreSQL persistence module, `save` per command, and the
    application recorder's notification log read in pages (`select_notifications`), its
    notifications turned into domain events by the application's own `mapper`."""

    def __init__(self, dsn: str) -> None:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "CREATE_TABLE": "y",
            "POSTGRES_POOL_SIZE": "10",
            **_libpq_env(dsn),
        }
        self.app: Application[UUID] = Application(env=env)

    def saves(self, threads: int, seconds: float) -> float:
        """Events/s of single-event saves from `threads` threads, each its own aggregate."""
        counts = [0] * threads
        baskets = [Basket() for _ in range(threads)]
        self.app.save(*baskets)
        deadline = time.perf_counter() + seconds
        workers = [
            threading.Thread(target=_peer_saves, args=(self.app, baskets[i], deadline, counts, i))
            for i in range(threads)
        ]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return sum(counts) / (time.perf_counter() - start)

    def fill(self, log_size: int) -> int:
        """Fill its notification log up to `log_size` events (as many as our replay reads, with
        the same payloads, 1,000 per save); returns the log's size."""
        stored = self.app.recorder.max_notification_id() or 0
        while stored < log_size:
            baskets = [Basket() for _ in range(10)]
            for i in range(990):
                baskets[i % 10].add_line(payload(stored + i)[0])
            self.app.save(*baskets)
            stored += 1000
        return stored

    def read(self, page: int, *, decode: bool) -> int:
        """Read the whole notification log in pages of `page`; with `decode`, map every
        notification to its domain event (`app.mapper.to_domain_event`). Returns the count."""
        read, after = 0, 1
        to_domain_event = self.app.mapper.to_domain_event
        while batch := self.app.recorder.select_notifications(start=after, limit=page):
            if decode:
                events = [to_domain_event(notification) for notification in batch]
                read += len(events)
            else:
                read += len(batch)
            after = batch[-1].id + 1
        return read

    def close(self) -> None:
        """Close the application's connection pool."""
        self.app.close()


_ADDRESS = {
    "first_name": "Alicetta", "last_name": "Quorrington", "company": "Quorrington Holdings",
    "phone": "+61400111222", "country": "Australia", "country_code": "AU", "state": "Victoria",
    "state_code": "VIC", "city": "Ballarat", "address": "17 Zanzibar Lane", "address2": None,
    "postal_code": "3350",
}  # fmt: skip


def _details(i: int) -> dict[str, Any]:
    customer = {
        "profile_id": f"profile-{i % 1000}", "email": f"c{i % 1000}@example.org", "phone": "+61400111222",
        "first_name": "Alicetta", "last_name": "Quorrington",
    }  # fmt: skip
    return {
        "customer": customer, "billing_address": _ADDRESS, "shipping_address": _ADDRESS, "payment_method": "card",
        "shipping_method": "express", "discount_code": None, "discount_type": None, "tags": ["web"],
        "note": "leave at the back door",
    }  # fmt: skip


def order_life(i: int, placed_only: bool) -> list[NewEvent]:
    """One order's events (domain-shaped data), appended one per transaction."""
    meta = {"actor": "bench", "source": "bench"}
    line = {"line_id": "L1", "name": "Merino crew neck", "quantity": 1, "price_sell": 12999,
            "price_current": 12999, "price_original": 12999}  # fmt: skip
    placed = {
        "order_id": str(uuid.uuid4()), "external_id": None, "source": None, "currency": "AUD", "status": "pending",
        "details": _details(i), "lines": [line], "amounts": {"subtotal": 12999, "total": 12999},
        "placed_at": "2026-01-02T03:04:05Z",
    }  # fmt: skip
    if placed_only:
        return [NewEvent("OrderPlaced", placed, meta)]
    changed = {"details": {**_details(i), "note": "ring twice"}, "changed": ["note"]}
    return [
        NewEvent("OrderPlaced", placed, meta),
        NewEvent("PaymentCaptured", {"amount": 12999, "method": "card", "reference": f"r{i}"}, meta),
        NewEvent(
            "ShipmentDispatched",
            {
                "shipment_id": "S1",
                "lines": [{"line_id": "L1", "quantity": 1}],
                "dispatched_at": "2026-01-02T05:00:00Z",
            },
            meta,
        ),
        NewEvent("OrderDetailsChanged", changed, meta),
        NewEvent("OrderStatusChanged", {"status": "shipped"}, meta),
    ]


async def run_orders(
    store: EventStore, *, seconds: float, concurrency: int, placed_only: bool
) -> tuple[float, int]:
    """(events/s, events) of writers placing orders and appending each order's events one at a time."""
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency

    async def loop(w: int) -> None:
        i = w
        while time.perf_counter() < deadline:
            i += concurrency
            stream = f"order-{uuid.uuid4()}"
            for version, new_event in enumerate(order_life(i, placed_only)):
                await store.append(stream, [new_event], version or NO_STREAM)
                counts[w] += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(w) for w in range(concurrency)))
    return sum(counts) / (time.perf_counter() - start), sum(counts)


async def server_cpu_reader(pool: asyncpg.Pool) -> Callable[[], float] | None:
    """A reader of the CPU seconds used so far by the server's postmaster and its children (every
    backend and background process), or None when the server is not a local Linux process this
    user can read. On a shared machine the CPU per event is steadier than the rate."""
    try:
        data_dir = await pool.fetchval("SHOW data_directory")
    except asyncpg.PostgresError:
        return None
    return _process_tree_cpu(str(data_dir))


def _process_tree_cpu(data_dir: str) -> Callable[[], float] | None:
    try:
        postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not Path("/proc").is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def read() -> float:
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process ended
            if int(entry.name) == postmaster or int(fields[1]) == postmaster:
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    return read


async def sealing(pool: asyncpg.Pool, *, seconds: float, rounds: int) -> None:
    """Appends with the personal-data codec beside appends without, alternating, same pool."""
    from ledger.privacy import Keyring, PersonalDataCodec, PgKeyStore

    names = [
        "OrderPlaced",
        "PaymentCaptured",
        "ShipmentDispatched",
        "OrderDetailsChanged",
        "OrderStatusChanged",
    ]
    registry = EventRegistry()
    for event_type in names:  # the store checks the type is known; the data has the domain's shape
        registry.register(LineAdded, event_type)
    keyring = Keyring.from_base64(Keyring.generate_base64())
    plain = EventStore(pool, registry)
    sealed = EventStore(pool, registry, codec=PersonalDataCodec(PgKeyStore(pool, keyring), keyring))
    server_cpu = await server_cpu_reader(pool)
    where = (
        "client + server"
        if server_cpu is not None
        else "client only: the server's processes are not readable"
    )
    print("\npersonal data: appends sealed (codec) beside plain, 8 writers, one event per append")
    print(f"CPU per event: median over the rounds, {where}; cpu ratio = plain / sealed")
    print(
        f"{'cell':<14}{'plain':>10}{'sealed':>10}{'ratio':>7}{'cpu plain':>11}{'cpu sealed':>12}{'ratio':>7}{'1st':>7}"
        "  target"
    )
    for label, placed_only in (("order life", False), ("placed only", True)):
        best = {"plain": 0.0, "sealed": 0.0}
        cpu: dict[str, list[float]] = {"plain": [], "sealed": []}
        for _ in range(rounds):
            for name, store in (("plain", plain), ("sealed", sealed)):
                client0, server0 = time.process_time(), server_cpu() if server_cpu else 0.0
                rate, events = await run_orders(
                    store, seconds=seconds, concurrency=8, placed_only=placed_only
                )
                used = time.process_time() - client0 + (server_cpu() - server0 if server_cpu else 0.0)
                best[name] = max(best[name], rate)
                cpu[name].append(used / max(events, 1) * 1e6)
        ratio = best["sealed"] / best["plain"]
        cpu_plain, cpu_sealed = statistics.median(cpu["plain"]), statistics.median(cpu["sealed"])
        target = TARGETS.get(label)
        verdict = "" if target is None else f">= {target}x {'ok' if ratio >= target else 'MISSED'}"
        print(
            f"{label:<14}{best['plain']:>10,.0f}{best['sealed']:>10,.0f}{ratio:>6.2f}x"
            f"{cpu_plain:>8,.0f} us{cpu_sealed:>9,.0f} us{cpu_plain / cpu_sealed:>6.2f}x"
            f"{cpu['plain'][0] / cpu['sealed'][0]:>6.2f}x  {verdict}"
        )
    await plain.aclose()
    await sealed.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dsn", default=os.environ.get("LEDGER_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternating raw/store rounds; the best is kept"
    )
    parser.add_argument(
        "--sealing-only", action="store_true", help="only the personal-data cells (sealed beside plain)"
    )
    args = parser.parse_args()

    name = f"ledger_bench_append_{os.getpid()}"

    db_dsn = urlunsplit(urlsplit(args.dsn)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(args.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await migrate(db_dsn)
        pool = await create_pool(
            db_dsn, StoreSettings(pool_min_size=33, pool_max_size=40), application_name="bench"
        )
        await pool.execute(RAW_TABLE)
        store = EventStore(pool, EventRegistry([LineAdded]))
        server = await pool.fetchval("SHOW server_version")
        print(f"PostgreSQL {server}; {os.cpu_count()} CPUs; {args.seconds}s per cell, best of {args.rounds}")
        if args.sealing_only:
            await sealing(pool, seconds=args.seconds, rounds=args.rounds)
            await pool.close()
            return
        print("raw conn: one connection per writer; raw pool: pool.execute; ratio = store / raw conn")
        print(f"{'cell':<14}{'raw conn':>10}{'raw pool':>10}{'store':>10}{'ratio':>7}{'/pool':>7}  target")
        ratios: dict[str, float] = {}
        for label, concurrency, batch in [
            ("single c1", 1, 1), ("single c8", 8, 1), ("single c32", 32, 1),
            ("batch 10", 8, 10), ("batch 100", 8, 100),
        ]:  # fmt: skip
            raw_best = pool_best = store_best = 0.0
            cell: dict[str, Any] = {
                "seconds": args.seconds, "concurrency": concurrency, "batch": batch, "store": store, "pool": pool,
            }  # fmt: skip
            for _ in range(args.rounds):
                raw_best = max(raw_best, await run_cell(lambda w: w.raw_append, dedicated=True, **cell))
                pool_best = max(pool_best, await run_cell(lambda w: w.raw_append, **cell))
                store_best = max(store_best, await run_cell(lambda w: w.store_append, **cell))
            ratios[label] = store_best / raw_best
            target = TARGETS.get(label)
            verdict = (
                "" if target is None else f">= {target}x {'ok' if ratios[label] >= target else 'MISSED'}"
            )
            print(
                f"{label:<14}{raw_best:>10,.0f}{pool_best:>10,.0f}{store_best:>10,.0f}"
                f"{ratios[label]:>6.2f}x{store_best / pool_best:>6.2f}x  {verdict}"
            )
        # Our appends again, alternating with the peer's saves cell by cell (same minute, same
        # noise), then the replays alternating with its notification-log reads.
        ours = {"single c1": 0.0, "single c8": 0.0}
        peer_rates = {"single c1": 0.0, "single c8": 0.0}
        peer = await asyncio.to_thread(Peer, db_dsn)
        try:
            for _ in range(args.rounds):
                for label, concurrency in (("single c1", 1), ("single c8", 8)):
                    cell = {
                        "seconds": args.seconds,
                        "concurrency": concurrency,
                        "batch": 1,
                        "store": store,
                        "pool": pool,
                    }
                    ours[label] = max(ours[label], await run_cell(lambda w: w.store_append, **cell))
                    rate = await asyncio.to_thread(peer.saves, concurrency, args.seconds)
                    peer_rates[label] = max(peer_rates[label], rate)
            await store.aclose()
            total = await pool.fetchval("SELECT count(*) FROM events")
            await asyncio.to_thread(peer.fill, total)
            rates = await replay(pool, store, peer, page=10_000, rounds=args.rounds)
        finally:
            peer.close()
        total = await pool.fetchval("SELECT count(*) FROM events")
        print(f"\nreplay of {total:,} events (cursor, pages of 10,000), alternating, best of {args.rounds}")
        print(f"  {'':<30}{'gc default':>12}{'relaxed gc':>12}  (ev/s)")
        for reader in (
            "raw fetch (jsonb decoded)",
            "store iter_all",
            "raw fetch (json text)",
            "store iter_all_raw",
        ):
            print(f"  {reader:<30}{rates[reader]:>12,.0f}{rates[reader + ' relaxed gc']:>12,.0f}")
        target = TARGETS["replay"]
        for mode in ("", " relaxed gc"):
            decoded = rates["store iter_all" + mode] / rates["raw fetch (jsonb decoded)" + mode]
            text = rates["store iter_all_raw" + mode] / rates["raw fetch (json text)" + mode]
            label = mode.strip() or "gc default"
            print(
                f"  {label:<11} iter_all / raw {decoded:.2f}x, iter_all_raw / raw {text:.2f}x"
                f"  >= {target}x {'ok' if min(decoded, text) >= target else 'MISSED'}"
            )
        print("\npeer: python eventsourcing (PostgreSQL persistence), same server, same run")
        for label in ("single c1", "single c8"):
            ratio = ours[label] / peer_rates[label]
            goal = PEER_TARGETS.get(label)
            verdict = "" if goal is None else f">= {goal}x {'ok' if ratio >= goal else 'MISSED'}"
            print(
                f"  {label:<12} ours {ours[label]:>9,.0f}  eventsourcing {peer_rates[label]:>9,.0f} ev/s"
                f"  {ratio:5.2f}x  {verdict}"
            )
        goal = PEER_TARGETS["replay"]
        print(
            f"  its notification log: {rates['peer select_notifications count']:,.0f} events, pages of 10,000"
        )
        for mode in ("", " relaxed gc"):
            for ours_name, theirs in (
                ("store iter_all_raw", "peer select_notifications"),  # rows, undecoded JSON
                ("store iter_all", "peer + mapper.to_domain_event"),  # decoded events
            ):
                mine, peers = rates[ours_name + mode], rates[theirs + mode]
                print(
                    f"  {mode.strip() or 'gc default':<11}{ours_name:<19}{mine:>9,.0f}  {theirs:<30}{peers:>9,.0f}"
                    f" ev/s  {mine / peers:5.2f}x  >= {goal}x {'ok' if mine / peers >= goal else 'MISSED'}"
                )
        await sealing(pool, seconds=args.seconds, rounds=args.rounds)
        await pool.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())

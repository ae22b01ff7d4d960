"""Rebuild benchmark: blue/green rebuild of both read models over N realistic events.

    .venv/bin/python bench/rebuild.py [--events 1000000] [--database-url URL] [--keep]

1. Makes a fresh database on the server of `--database-url` (default: LEDGER_DATABASE_URL, else
   the local PostgreSQL), migrates it, and loads N events of order histories decided by the
   domain (`projections.simulate`): about 2,000 orders open at a time, interleaved in the log
   as live traffic would be.
2. The load bypasses `append` (one COPY per 50k rows, each in its own transaction) but the
   rows are valid: versions contiguous from 1, unique event ids, and the per-stream hash chain
   computed as `ledger_append` does. The chain needs jsonb's canonical text of `data`, which
   `projections.canonical.jsonb_text` writes for these JSON values (objects, arrays, strings, ints, bools, null);
   after the load one SQL pass recomputes every hash and link, and the bench aborts on any
   mismatch.
3. In a child process (so peak RSS is the rebuild's, not the generator's): the raw read rate
   of the same rows (`iter_all_records(raw=True)`, what the rebuild reads), then a rebuild of
   `order_state` and of `transactions` with the rebuild's own figures, then raw read again.

Prints one JSON document per phase and a summary with the rebuild/raw ratio (target >= 0.3).

`--sealed` (docs/privacy.md#costs): the personal fields of the loaded events are sealed as the
personal-data codec seals them (a data key per customer, wrapped keys in `privacy_keys`). The
rebuild folds the sealed form (it never opens it: the read models keep tokens), and one more
phase reads every `order_state` document and opens it with the key store, as the list routes
do, beside the same read without opening: its ratio is what opening costs a reader.
Each phase also reports `cores_busy`: how many of the machine's cores were busy on average
(every process, PostgreSQL included, from /proc/stat), so a ratio can be read against the
hardware: the raw read is one stream, the rebuild uses as many cores as it is given.
Each phase also reports `cpu_us_per_event`: CPU time per event of the bench's own processes
(the measuring process and its rebuild workers) plus the local PostgreSQL server's (every
process of the server, from /proc; None when the server is not local), which other load on
the machine does not change the way it changes seconds: the summary prints its ratio too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.domain import event_data, schema_version_of
from ledger.store.pool import create_pool
from ledger.store.reads import iter_all_records
from ledger.store.records import START
from ledger_app.migrations import migrate_all
from projections import checksums, order_state, transactions
from projections.canonical import jsonb_text
from projections.rebuild import rebuild
from projections.simulate import HistoryGenerator

COLUMNS = [
    "stream_id", "version", "event_id", "type", "schema_version", "data", "metadata", "recorded_at", "prev_hash", "hash",
]  # fmt: skip
CHECK_SQL = """
SELECT count(*) FILTER (WHERE hash <> sha256(coalesce(prev_hash, ''::bytea) || convert_to(concat_ws(E'\\n',
           stream_id, version::text, event_id::text, type, schema_version::text, data::text, metadata::text), 'UTF8')))
           AS bad_hash,
       count(*) FILTER (WHERE prev_hash IS DISTINCT FROM prev) AS bad_link,
       count(*) FILTER (WHERE version <> expected_version) AS bad_version
  FROM (SELECT *, lag(hash) OVER w AS prev, row_number() OVER w AS expected_version
          FROM events WINDOW w AS (PARTITION BY stream_id ORDER BY version)) e
"""


def _hash(prev: bytes | None, fields: tuple[str, int, uuid.UUID, str, int, str, str]) -> bytes:
    """The chain hash exactly as `ledger_append` computes it (and `ledger.store.chain.event_hash`)."""
    body = "\n".join(str(f) for f in fields)
    return hashlib.sha256((prev or b"") + body.encode()).digest()


class Sealer:
    """Seals personal fields as `ledger.privacy.PersonalDataCodec` does, with one key per customer."""

    def __init__(self, kek: str) -> None:
        from ledger.privacy.cipher import DataKey, Keyring

        self.keyring = Keyring.from_base64(kek)
        self.keys: dict[str, DataKey] = {}
        self._make = DataKey.generate

    def seal(self, stream: str, data: dict[str, Any]) -> dict[str, Any]:
        from ledger.privacy.codec import subject_for
        from ledger.privacy.fields import seal_details, subject_hints

        profile, email = subject_hints(data)
        subject = subject_for(stream, profile, self.keyring.blind_index(email) if email else None)
        key = self.keys.get(subject)
        if key is None:
            key = self.keys[subject] = self._make(uuid.uuid4())
        return seal_details(data, key)

    async def store_keys(self, conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO privacy_keys (key_id, subject, wrapped, kek_id) VALUES ($1, $2, $3, $4)",
            [(k.key_id, s, self.keyring.wrap(k), self.keyring.kek_id) for s, k in self.keys.items()],
        )


def generate_rows(total: int, seed: int = 42, open_orders: int = 2000, sealer: Sealer | None = None) -> Any:
    """Rows for COPY, interleaving ~`open_orders` orders the way live traffic does."""
    rng = random.Random(seed)
    generator = HistoryGenerator(seed=seed)
    clock = datetime(2026, 1, 1, tzinfo=UTC)
    active: list[list[Any]] = []  # [stream, events, next index, prev hash]
    emitted = 0
    while emitted < total:
        while len(active) < open_orders:
            stream, events = generator.history(max_events=12)
            active.append([stream, events, 0, None])
        slot = rng.randrange(len(active))
        entry = active[slot]
        stream, events, index, prev = entry
        event = events[index]
        version = index + 1
        values = event_data(event)
        if sealer is not None and event.type in ("OrderPlaced", "OrderDetailsChanged"):
            values = sealer.seal(stream, values)
        data = jsonb_text(values)
        meta = jsonb_text({"actor": "bench", "source": "bench", "correlation_id": str(uuid.uuid4())})
        event_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        sv = schema_version_of(event)
        digest = _hash(prev, (stream, version, event_id, event.type, sv, data, meta))
        clock += timedelta(milliseconds=rng.randint(1, 50))
        yield (stream, version, event_id, event.type, sv, data, meta, clock, prev, digest)
        emitted += 1
        if version == len(events):
            active[slot] = active[-1]
            active.pop()
        else:
            entry[2], entry[3] = version, digest


async def load(dsn: str, total: int, kek: str | None = None) -> dict[str, Any]:
    """Load `total` events with COPY (50k rows per transaction) and check every hash and link."""
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    batch: list[Any] = []
    sealer = None if kek is None else Sealer(kek)
    try:
        for row in generate_rows(total, sealer=sealer):
            batch.append(row)
            if len(batch) == 50_000:
                await conn.copy_records_to_table("events", records=batch, columns=COLUMNS)
                batch = []
        if batch:
            await conn.copy_records_to_table("events", records=batch, columns=COLUMNS)
        if sealer is not None:
            await sealer.store_keys(conn)
        loaded = time.perf_counter()
        await conn.execute("ANALYZE events")
        check = await conn.fetchrow(CHECK_SQL)
        assert check is not None
        if any(check.values()):
            raise SystemExit(f"loaded rows are not valid: {dict(check)}")
        orders = await conn.fetchval("SELECT count(DISTINCT stream_id) FROM events")
    finally:
        await conn.close()
    return {
        "phase": "load",
        "events": total,
        "orders": orders,
        "seconds": round(loaded - started, 1),
        "chain_check_seconds": round(time.perf_counter() - loaded, 1),
        "hash_chain": "valid",
        "sealed": sealer is not None,
    }


def machine_busy_seconds() -> float | None:
    """CPU-seconds all cores of the machine spent busy since boot (Linux /proc/stat; None elsewhere).

    Busy is everything but idle and iowait; guest time is already counted in user.
    """
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CoresBusy:
    """Average number of busy cores between `__init__` and `value()`."""

    def __init__(self) -> None:
        self._busy, self._started = machine_busy_seconds(), time.perf_counter()

    def value(self) -> float | None:
        busy = machine_busy_seconds()
        if busy is None or self._busy is None:
            return None
        return round((busy - self._busy) / (time.perf_counter() - self._started), 2)


def _proc_cpu(pid: int, children: bool = False) -> float:
    """utime + stime (+ cutime + cstime of reaped children) of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return used / os.sysconf("SC_CLK_TCK")


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


class CpuUsed:
    """CPU seconds of this process, its reaped children (rebuild workers end with the rebuild)
    and the local server (its postmaster with every child, live or reaped) since `start`."""

    def __init__(self, postmaster: int | None) -> None:
        self._postmaster = postmaster
        self._client, self._server = self._now()

    @classmethod
    async def start(cls, pool: asyncpg.Pool) -> CpuUsed:
        try:
            postmaster: int | None = _ppid(await pool.fetchval("SELECT pg_backend_pid()"))
        except OSError:  # not a local server, or no /proc
            postmaster = None
        return cls(postmaster)

    def _now(self) -> tuple[float, float | None]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        workers = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
        if self._postmaster is None:
            return client, None
        server = 0.0
        try:
            server = _proc_cpu(self._postmaster, children=True)
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError, IndexError, ValueError):
                        if _ppid(int(entry)) == self._postmaster:
                            server += _proc_cpu(int(entry))
        except OSError:
            return client, None
        return client, server

    def per_event(self, events: int) -> dict[str, float | None]:
        client, server = self._now()
        mine = (client - self._client) / events * 1e6
        theirs = None if server is None or self._server is None else (server - self._server) / events * 1e6
        return {
            "cpu_us_per_event": None if theirs is None else round(mine + theirs, 1),
            "client_cpu_us_per_event": round(mine, 1),
            "server_cpu_us_per_event": None if theirs is None else round(theirs, 1),
        }


async def raw_read(pool: asyncpg.Pool, page_size: int) -> dict[str, Any]:
    cpu = await CpuUsed.start(pool)
    cores = CoresBusy()
    started, count = time.perf_counter(), 0
    async for page in iter_all_records(pool, START, page_size=page_size, raw=True):
        count += len(page)
    seconds = time.perf_counter() - started
    return {
        "phase": "raw_read",
        "events": count,
        "seconds": round(seconds, 2),
        "events_per_s": round(count / seconds),
        "cores_busy": cores.value(),
        **cpu.per_event(count),
    }


async def open_documents(pool: asyncpg.Pool, kek: str) -> list[dict[str, Any]]:
    """Every `order_state` document read and parsed, beside the same read opened with the key store."""
    from ledger.privacy import Keyring, PersonalDataCodec, PgKeyStore

    keyring = Keyring.from_base64(kek)
    codec = PersonalDataCodec(PgKeyStore(pool, keyring), keyring)
    figures: dict[str, float] = {}
    count = 0
    for _ in range(2):
        for phase, opened in (("read documents", False), ("read and open documents", True)):
            started, count = time.perf_counter(), 0
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                cursor = await conn.cursor("SELECT doc FROM order_state")
                while rows := await cursor.fetch(500):
                    docs = [json.loads(r["doc"]) for r in rows]
                    if opened:
                        docs = await codec.reveal(docs)
                    count += len(docs)
            figures[phase] = max(figures.get(phase, 0.0), count / (time.perf_counter() - started))
    return [
        {"phase": phase, "documents": count, "documents_per_s": round(rate)}
        for phase, rate in figures.items()
    ]


async def measure(dsn: str, page_size: int, workers: int, kek: str | None = None) -> None:
    pool = await create_pool(dsn, application_name="bench-rebuild")
    results: list[dict[str, Any]] = []
    try:
        results.append(await raw_read(pool, page_size))
        for projection in (order_state.PROJECTION, transactions.PROJECTION):
            cpu = await CpuUsed.start(pool)
            cores = CoresBusy()
            report = await rebuild(pool, projection, dsn=dsn, workers=workers, page_size=page_size)
            figures = report.as_json()
            total = sum(report.seconds.values())
            figures["end_to_end_events_per_s"] = round(report.bulk_events / total)
            figures["cores_busy"] = cores.value()
            figures.update(cpu.per_event(report.bulk_events))
            figures["phase"] = f"rebuild {projection.name}"
            results.append(figures)
        results.append(await raw_read(pool, page_size))
        if kek is not None:
            results.extend(await open_documents(pool, kek))
    finally:
        await pool.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Each rebuild also reports its workers' peak (they may not have been reaped yet).
    workers_peak = max(
        [resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]
        + [r.get("worker_peak_rss_mib") or 0 for r in results]
    )
    print(
        json.dumps(
            {"results": results, "peak_rss_mib": round(peak), "worker_peak_rss_mib": round(workers_peak)}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LEDGER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--page-size", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="rebuild worker processes")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument(
        "--reuse", action="store_true", help="--database-url is a kept bench database: reset, re-measure"
    )
    parser.add_argument("--sealed", action="store_true", help="seal personal fields (docs/privacy.md)")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kek", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        asyncio.run(measure(args.database_url, args.page_size, args.workers, args.kek))
        return
    if args.sealed and not args.kek:
        from ledger.privacy.cipher import Keyring

        args.kek = Keyring.generate_base64()
    if args.reuse:
        asyncio.run(reset(args.database_url))
        report(args.database_url, args)
        return

    name = f"ledger_bench_{os.getpid()}"
    # The path names the database; keep the query (a unix-socket `?host=/dir` has slashes too).
    dsn = urlunsplit(urlsplit(args.database_url)._replace(path=f"/{name}"))

    async def create() -> None:
        admin = await asyncpg.connect(args.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await migrate_all(dsn)

    async def drop() -> None:
        admin = await asyncpg.connect(args.database_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    try:
        print(json.dumps(asyncio.run(load(dsn, args.events, args.kek if args.sealed else None))), flush=True)
        report(dsn, args)
    finally:
        if not args.keep:
            asyncio.run(drop())
        else:
            print(f"kept database {dsn} (re-measure with --reuse --database-url {dsn})")


async def reset(dsn: str) -> None:
    """Forget every projection version of a kept bench database."""
    conn = await asyncpg.connect(dsn)
    try:
        for projection in (order_state.PROJECTION, transactions.PROJECTION):
            for table in projection.tables:
                await conn.execute(f"DROP VIEW IF EXISTS {table.base}")
                await conn.execute(f"DROP TABLE IF EXISTS {table.physical(projection.version)}")
            await checksums.drop(conn, projection, projection.version)
        await conn.execute("DELETE FROM projection_versions")
        await conn.execute("DELETE FROM checkpoints WHERE name LIKE 'projection:%'")
    finally:
        await conn.close()


def report(dsn: str, args: argparse.Namespace) -> None:
    """Measure in a child process and print the figures."""
    child = subprocess.run(
        [sys.executable, __file__, "--measure", "--database-url", dsn, "--page-size", str(args.page_size),
         "--workers", str(args.workers), *(["--kek", args.kek] if args.sealed else [])],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    for result in measured["results"]:
        print(json.dumps(result))
    raws = [r for r in measured["results"] if r["phase"] == "raw_read"]
    fastest = max(raws, key=lambda r: r["events_per_s"])
    raw = fastest["events_per_s"]
    cheapest = min(raws, key=lambda r: r.get("cpu_us_per_event") or r["client_cpu_us_per_event"])
    for result in measured["results"]:
        if result["phase"].startswith("rebuild"):
            print(
                f"{result['phase']}: build {result['build_rate']:,} ev/s = {result['build_rate'] / raw:.2f}x raw read"
                f" ({raw:,} ev/s); with verification {result['end_to_end_events_per_s']:,} ev/s"
                f" = {result['end_to_end_events_per_s'] / raw:.2f}x"
                f"; cores busy {_cores(result)} (raw read {_cores(fastest)}) of {os.cpu_count()}"
            )
            print(
                f"  CPU per event {_cpu(result)} against the raw read's {_cpu(cheapest)}{_cpu_ratio(cheapest, result)}"
            )
    docs = {r["phase"]: r["documents_per_s"] for r in measured["results"] if "documents_per_s" in r}
    if docs:
        ratio = docs["read and open documents"] / docs["read documents"]
        print(
            f"sealed log: opening order_state documents {docs['read and open documents']:,} docs/s ="
            f" {ratio:.2f}x reading them unopened ({docs['read documents']:,} docs/s)"
        )
    if args.workers > 1:
        workers = f"largest of {args.workers} rebuild workers {measured['worker_peak_rss_mib']} MiB"
    else:
        workers = "the rebuild ran in it (one worker: no worker processes)"
    print(f"peak RSS: measuring process {measured['peak_rss_mib']} MiB, {workers}")


def _cpu(result: dict[str, Any]) -> str:
    if result.get("cpu_us_per_event") is None:
        return f"{result['client_cpu_us_per_event']} us (bench processes only: the server is not local)"
    return (
        f"{result['cpu_us_per_event']} us (bench processes {result['client_cpu_us_per_event']},"
        f" server {result['server_cpu_us_per_event']})"
    )


def _cpu_ratio(raw: dict[str, Any], result: dict[str, Any]) -> str:
    """Raw read CPU over rebuild CPU per event: the rate ratio the rebuild would reach if both had
    the same cores to themselves (only meaningful with the server's CPU counted)."""
    if result.get("cpu_us_per_event") is None or raw.get("cpu_us_per_event") is None:
        return ""
    return f": {raw['cpu_us_per_event'] / result['cpu_us_per_event']:.2f}x in CPU"


def _cores(result: dict[str, Any]) -> str:
    return "n/a" if result.get("cores_busy") is None else f"{result['cores_busy']:.2f}"


if __name__ == "__main__":
    main()

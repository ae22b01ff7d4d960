"""Bulk load of a fresh version: fold the log up to one checkpoint, COPY the rows, in parallel.

Single-stream projections are independent per order, so the log is split into stream id
ranges (`partition`); each part is read through its own server-side cursor in `(stream_id,
version)` order (only the columns the fold needs), one whole order after another. An order is
folded as its events arrive and its rows are written as soon as its last event was read, so a
part holds one order and one COPY chunk in memory, not every order of the log. With more than
one part the parts run in worker processes, because decoding and folding are CPU-bound Python.

Each part overlaps its three jobs: the server reads the next page while this process folds the
current one, and the previous chunk's COPY (on a second connection, in its own short
transaction, so the reading transaction stays read-only and never holds the fence back) runs
while the next chunk is folded.

Every part stops at the same `upper` checkpoint: the fenced head when the build started, so
every event at or below it is committed and visible, and the tables end exactly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing.sharedctypes import Synchronized
from typing import Any, TypeVar

import asyncpg

from ledger.domain.state import Order, evolve
from ledger.repository import DECODERS, decode
from ledger.store.pool import init_connection
from ledger.store.records import Checkpoint
from projections import checksums, quarantine, tables
from projections.canonical import order_checksums
from projections.definition import Projection, Row
from projections.partition import StreamRange
from projections.quarantine import Failure, describe

T = TypeVar("T")

_PART_SQL = """
SELECT stream_id, version, type, schema_version, data::text, recorded_at FROM events
 WHERE (tx, position) <= ($1::xid8, $2::bigint){streams}
 ORDER BY stream_id, version
"""
#: Read a part through the `(stream_id, version)` index. Left to itself the planner sorts the
#: part with parallel workers instead: the first row comes only after the whole sort (seconds
#: of an idle fold), and the workers take CPU from the folds; the index scan streams from the
#: first row and costs the server less (measured: 2.2-2.5 s against 2.6-3.0 s plus the
#: workers' CPU for half of a 1M-event log).
READ_IN_STREAM_ORDER = "SET LOCAL enable_sort = off; SET LOCAL max_parallel_workers_per_gather = 0"

#: Events folded between two turns of the event loop (about 10 ms of CPU).
_SLICE = 500


@dataclass(frozen=True, slots=True)
class Part:
    """One slice of a bulk load (picklable, for worker processes)."""

    dsn: str
    projection: Projection
    version: int
    upper: Checkpoint
    streams: StreamRange
    page_size: int
    copy_chunk: int
    #: Orders the part may quarantine before an error is taken for a bug in the projection's
    #: code rather than a bad event, and raised as itself (the rebuild stops).
    max_quarantined: int = 10


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Cyclic GC off for a bulk fold (restored after).

    A bulk fold allocates millions of objects (events, orders, rows) that live until their
    chunk is written: young-generation collections would keep re-examining them, for no
    garbage (orders, events and rows hold no reference cycles). Reference counting still
    frees everything.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Writer:
    """COPYs chunks of rows on its own connection, one chunk in flight behind the fold."""

    def __init__(self, conn: asyncpg.Connection, part: Part) -> None:
        self._conn = conn
        self._part = part
        self._pending: asyncio.Task[None] | None = None

    async def write(self, chunk: _Chunk) -> None:
        """Start writing a chunk once the previous one is written (its error raises here)."""
        await self.flush()
        self._pending = asyncio.ensure_future(self._write(chunk))

    async def _write(self, chunk: _Chunk) -> None:
        projection, version = self._part.projection, self._part.version
        try:
            await tables.copy_rows(self._conn, projection, version, chunk.rows)
        except tables.ROW_ERRORS:
            # Some order's rows cannot be written (a value the database or its codec refuses):
            # the COPY wrote nothing, so write the orders one by one and quarantine the refused.
            refused = await tables.copy_each(self._conn, projection, version, chunk.orders)
            chunk.refuse(projection, refused)
        await checksums.write(self._conn, projection, version, chunk.records)
        await quarantine.record(self._conn, projection.name, version, chunk.failures)

    async def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


class _Chunk:
    """Rows of up to `copy_chunk` orders, their checksum records, and the orders refused.

    `orders` keeps each order's own rows (references, no copies) only so a COPY that fails can
    be retried order by order.
    """

    def __init__(self, bases: Sequence[str]) -> None:
        self.rows: dict[str, list[Row]] = {base: [] for base in bases}
        self.records: list[checksums.Record] = []
        self.orders: list[tuple[str, int, Mapping[str, Sequence[Row]]]] = []
        self.failures: list[Failure] = []

    def refuse(self, projection: Projection, failures: Sequence[Failure]) -> None:
        """These orders' rows were not written: record them with no rows, and quarantine them."""
        refused = {f.stream_id for f in failures}
        empty = order_checksums(projection, {})
        self.records = [
            checksums.record(projection, r[0], r[1], r[2], empty) if r[0] in refused else r
            for r in self.records
        ]
        self.failures.extend(failures)


async def load_part(
    reader: asyncpg.Connection, writer: asyncpg.Connection, part: Part, advance: Callable[[int], None]
) -> tuple[int, int]:
    """Fold one part and COPY its rows; returns `(events, orders)`."""
    with gc_paused():
        return await _load_part(reader, _Writer(writer, part), part, advance)


async def _load_part(
    reader: asyncpg.Connection, writer: _Writer, part: Part, advance: Callable[[int], None]
) -> tuple[int, int]:
    projection = part.projection
    row_function = projection.rows
    bases = [t.base for t in projection.tables]
    chunk = _Chunk(bases)
    orders = events = 0
    current: str | None = None
    state: Order | None = None
    failure: Failure | None = None  # why `current` cannot be folded (its later events are skipped)
    folded = last_version = 0  # events of `current` read, and the last one's version
    streams, args = part.streams.where("stream_id", 3)
    decoders = DECODERS
    empty = order_checksums(projection, {})
    refused = 0

    def quarantine_or_raise(exc: Exception, stream: str, version: int) -> Failure:
        """A failure to quarantine; past `max_quarantined` of them, the error itself."""
        nonlocal refused
        refused += 1
        if refused > part.max_quarantined:
            raise exc
        return Failure(stream, version, None, describe(exc))

    def finish() -> None:
        """`current` is complete: add its rows to the chunk, and what was folded to the records.

        An order that could not be folded, or whose row function raised, gets no rows and is
        quarantined (`projections.quarantine`); its record still counts its events, so the
        verification's completeness check holds, and both sides compare it as rowless.
        """
        assert current is not None
        nonlocal failure
        if failure is None:
            assert state is not None
            try:
                rows = row_function(state)
                sums = order_checksums(projection, rows)
            except Exception as exc:  # the row function is pure: its error is this order's
                failure = quarantine_or_raise(exc, current, last_version)
        if failure is not None:
            chunk.failures.append(failure)
            chunk.records.append(checksums.record(projection, current, folded, last_version, empty))
            return
        for base, table_rows in rows.items():
            chunk.rows[base] += table_rows
        chunk.orders.append((current, last_version, rows))
        chunk.records.append(checksums.record(projection, current, folded, last_version, sums))

    try:
        async with reader.transaction(readonly=True):
            await reader.execute(READ_IN_STREAM_ORDER)
            cursor = await reader.cursor(
                _PART_SQL.format(streams=streams), part.upper.tx, part.upper.position, *args
            )
            fetching = asyncio.ensure_future(cursor.fetch(part.page_size))
            try:
                while page := await fetching:
                    fetching = asyncio.ensure_future(cursor.fetch(part.page_size))
                    for start in range(0, len(page), _SLICE):
                        # Let the prefetch and the COPY in flight send their next bytes, so the
                        # server keeps working while this process folds (the fold never awaits).
                        await asyncio.sleep(0)
                        for stream, version, type_, schema_version, data, recorded_at in page[
                            start : start + _SLICE
                        ]:
                            if stream != current:
                                if current is not None:
                                    finish()
                                current, state, folded, failure = stream, None, 0, None
                            folded += 1
                            last_version = version
                            if failure is not None:
                                continue
                            try:  # `ledger.repository.apply`, inlined: this runs for every event
                                decoder = decoders.get(type_)
                                event = (
                                    decoder[1](data)
                                    if decoder is not None and decoder[0] == schema_version
                                    else decode(type_, schema_version, data)
                                )
                                state = evolve(state, event, version=version, recorded_at=recorded_at)
                            except Exception as exc:  # quarantine this order; the log flows on
                                failure = quarantine_or_raise(exc, stream, version)
                    events += len(page)
                    advance(len(page))
                    if len(chunk.records) >= part.copy_chunk:
                        await writer.write(chunk)
                        orders += len(chunk.records)
                        chunk = _Chunk(bases)
            finally:
                await _settle(fetching)
        if current is not None:
            finish()
        await writer.write(chunk)
        await writer.flush()
    finally:
        writer.cancel()
    return events, orders + len(chunk.records)


async def _settle(fetching: asyncio.Future[Any]) -> None:
    """Let a prefetch still in flight end (cancelled) before its transaction does.

    An error that leaves the fold with a fetch pending would otherwise meet the transaction's
    ROLLBACK on a busy connection, and asyncpg's "another operation is in progress" would be
    raised in place of the error that stopped the fold.
    """
    if not fetching.done():
        fetching.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await fetching


_progress: Synchronized[int] | None = None


def _init_worker(counter: Synchronized[int], parent: int) -> None:
    global _progress  # noqa: PLW0603 - one counter per worker process, set once by the pool
    _progress = counter
    # `parent` comes from the pool, not `os.getppid()`: a worker still starting when its
    # parent died has been adopted already, and would watch the wrong process.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """End this worker once the rebuilding process is gone (SIGKILL or SIGTERM leave it no
    chance to stop its workers): an orphan would go on folding and COPYing into tables that a
    restarted rebuild recreates. Exiting drops its connections, so the server rolls back its
    transactions."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(1)


def report_progress(n: int) -> None:
    """In a `WorkerPool` worker: add `n` to the pool's shared progress counter (else nothing)."""
    if _progress is not None:
        with _progress.get_lock():
            _progress.value += n


def _ready() -> None:
    """Nothing: submitted once per worker so the pool starts them ahead of the work."""


def worker_context() -> multiprocessing.context.BaseContext:
    """Spawned workers: no inherited event loop, sockets or threads, and the parent's `sys.path`.

    (A fork server would start later workers faster, but it imports the code with its own
    `sys.path`, which need not resolve to the parent's modules.)
    """
    return multiprocessing.get_context("spawn")


class WorkerPool:
    """Worker processes shared by a rebuild's phases (bulk load, then verification).

    Starting a worker costs about half a second (a fresh interpreter importing pydantic and the
    domain), so a rebuild starts them once, before its own setup queries, and keeps them for
    verification instead of starting a second set.
    """

    def __init__(self, workers: int) -> None:
        context = worker_context()
        self.workers = workers
        self.counter: Synchronized[int] = context.Value("q", 0)
        self.executor = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(self.counter, os.getpid())
        )
        self._warm = [self.executor.submit(_ready) for _ in range(workers)]
        #: The largest peak RSS (KiB) a worker reported (`RUSAGE_CHILDREN` only counts
        #: workers once they have exited and been reaped).
        self.peak_rss_kib = 0

    def note_peak(self, kib: int) -> None:
        self.peak_rss_kib = max(self.peak_rss_kib, kib)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def terminate(self) -> None:
        """Stop the workers now, parts in progress included (a rebuild that failed or was
        interrupted must not wait for them, nor leave them writing)."""
        # ProcessPoolExecutor cannot stop a running call before Python 3.14
        # (`terminate_workers`); its process table is the only handle on them.
        processes = list((getattr(self.executor, "_processes", None) or {}).values())
        for process in processes:
            process.terminate()
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(5)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()


def peak_rss_kib() -> int:
    """This process's peak resident memory (KiB, Linux `ru_maxrss`)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_part(part: Part) -> tuple[int, int, int]:
    """Worker process entry: its own event loop and connections; `(events, orders, peak RSS KiB)`."""

    async def main() -> tuple[int, int]:
        reader = await asyncpg.connect(part.dsn, server_settings={"statement_timeout": "0"})
        try:
            writer = await asyncpg.connect(part.dsn, server_settings={"statement_timeout": "0"})
            try:
                await init_connection(reader)
                await init_connection(writer)
                return await load_part(reader, writer, part, report_progress)
            finally:
                await writer.close()
        finally:
            await reader.close()

    events, orders = asyncio.run(main())
    return events, orders, peak_rss_kib()


async def load_parallel(
    parts: list[Part], advance: Callable[[int], None], pool: WorkerPool | None = None, poll_s: float = 0.2
) -> tuple[int, int]:
    """Run parts in worker processes (`pool`'s, else a pool of their own)."""
    if pool is None:
        with WorkerPool(len(parts)) as own:
            return await load_parallel(parts, advance, own, poll_s)
    results = await run_watched(pool, [partial(_run_part, part) for part in parts], advance, poll_s)
    pool.note_peak(max(r[2] for r in results))
    return sum(r[0] for r in results), sum(r[1] for r in results)


async def run_watched(
    pool: WorkerPool, calls: Sequence[Callable[[], T]], advance: Callable[[int], None], poll_s: float = 0.2
) -> list[T]:
    """Run `calls` (picklable) in the pool's workers; what they `report_progress` goes to `advance`."""
    loop = asyncio.get_running_loop()
    counter = pool.counter
    start, reported = counter.value, 0
    futures = [loop.run_in_executor(pool.executor, call) for call in calls]
    pending: Any = futures
    while pending:
        _, pending = await asyncio.wait(pending, timeout=poll_s)
        seen = counter.value - start
        advance(seen - reported)
        reported = seen
    return [f.result() for f in futures]

"""Bulk load of a fresh version: fold the log up to one checkpoint, COPY the rows, in parallel.

Single-stream projections are independent per order, so the log is split by
`hash(stream_id) mod parts` (Message DB's consumer-group trick): each part is read through its
own server-side cursor (only the columns the fold needs, in `(tx, position)` order, which is
version order within a stream), folded in memory and COPYed into the bare tables. With more
than one part the parts run in worker processes, because decoding and folding are CPU-bound
Python; with one part it runs in this process and hands its fold cache to the catch-up.

Every part stops at the same `upper` checkpoint: the fenced head when the build started, so
every event at or below it is committed and visible, and the tables end exactly there.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import resource
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import asyncpg

from ledger.domain.events import decode_event
from ledger.domain.state import evolve
from ledger.store.pool import init_connection
from ledger.store.records import Checkpoint
from projections import tables
from projections.definition import Projection
from projections.fold import OrderFolder

_PART_SQL = """
SELECT stream_id, version, type, schema_version, data::text, recorded_at FROM events
 WHERE (tx, position) <= ($1::xid8, $2::bigint) AND ($3::integer = 1 OR mod(hashtext(stream_id)::bigint & 2147483647, $3) = $4)
 ORDER BY tx, position
"""


@dataclass(frozen=True, slots=True)
class Part:
    """One slice of a bulk load (picklable, for worker processes)."""

    dsn: str
    projection: Projection
    version: int
    upper: Checkpoint
    index: int
    parts: int
    page_size: int
    copy_chunk: int


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Cyclic GC off for a bulk fold (restored after).

    A bulk fold keeps every folded order alive until its rows are written: millions of
    long-lived objects that each young-generation collection re-examines as they age, for no
    garbage (orders, events and rows hold no reference cycles). Measured: the fold and row
    building take about half the time without it. Reference counting still frees everything.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


async def load_part(
    conn: asyncpg.Connection, part: Part, folder: OrderFolder, advance: Callable[[int], None]
) -> tuple[int, int]:
    """Fold one part into `folder` and COPY its rows; returns `(events, orders)`."""
    with gc_paused():
        return await _load_part(conn, part, folder, advance)


async def _load_part(
    conn: asyncpg.Connection, part: Part, folder: OrderFolder, advance: Callable[[int], None]
) -> tuple[int, int]:
    states = folder.states
    get = states.get
    events = 0
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(_PART_SQL, part.upper.tx, part.upper.position, part.parts, part.index)
        while page := await cursor.fetch(part.page_size):
            # `fold.apply_one` inlined: one call less per event, in the loop that runs millions.
            for stream, version, type_, schema_version, data, recorded_at in page:
                event = decode_event(type_, data, schema_version=schema_version)
                states[stream] = evolve(get(stream), event, version=version, recorded_at=recorded_at)
            events += len(page)
            advance(len(page))
    for chunk in tables.chunks(states.values(), part.copy_chunk):
        await tables.copy_rows(
            conn, part.projection, part.version, tables.rows_by_table(part.projection, chunk)
        )
    return events, len(states)


_progress: Synchronized[int] | None = None


def _init_worker(counter: Synchronized[int]) -> None:
    global _progress  # noqa: PLW0603 - one counter per worker process, set once by the pool
    _progress = counter


def _advance(n: int) -> None:
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
            workers, mp_context=context, initializer=_init_worker, initargs=(self.counter,)
        )
        self._warm = [self.executor.submit(_ready) for _ in range(workers)]
        #: The largest peak RSS (KiB) a worker reported (`RUSAGE_CHILDREN` only counts
        #: workers once they have exited and been reaped).
        self.peak_rss_kib = 0

    def note_peak(self, kib: int) -> None:
        self.peak_rss_kib = max(self.peak_rss_kib, kib)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def peak_rss_kib() -> int:
    """This process's peak resident memory (KiB, Linux `ru_maxrss`)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _run_part(part: Part) -> tuple[int, int, int]:
    """Worker process entry: its own event loop and connection; `(events, orders, peak RSS KiB)`."""

    async def main() -> tuple[int, int]:
        conn = await asyncpg.connect(part.dsn, server_settings={"statement_timeout": "0"})
        try:
            await init_connection(conn)
            return await load_part(conn, part, OrderFolder(capacity=None), _advance)
        finally:
            await conn.close()

    events, orders = asyncio.run(main())
    return events, orders, peak_rss_kib()


async def load_parallel(
    parts: list[Part], advance: Callable[[int], None], pool: WorkerPool | None = None, poll_s: float = 0.2
) -> tuple[int, int]:
    """Run parts in worker processes (`pool`'s, else a pool of their own)."""
    if pool is None:
        with WorkerPool(len(parts)) as own:
            return await load_parallel(parts, advance, own, poll_s)
    loop = asyncio.get_running_loop()
    counter = pool.counter
    start, reported = counter.value, 0
    futures = [loop.run_in_executor(pool.executor, _run_part, part) for part in parts]
    pending: Any = futures
    while pending:
        _, pending = await asyncio.wait(pending, timeout=poll_s)
        seen = counter.value - start
        advance(seen - reported)
        reported = seen
    results = [f.result() for f in futures]
    pool.note_peak(max(r[2] for r in results))
    return sum(r[0] for r in results), sum(r[1] for r in results)

"""Append lanes: pool connections kept leased for appends while appends keep coming.

An append is one statement, so everything around it counts. Returning a connection to an
asyncpg pool costs about 50 µs of CPU per release (a shielded task, housekeeping), acquiring
it about 10 µs more: measured, a third of the Python CPU of a single-event append, and on a
2-core machine that CPU is taken from PostgreSQL. Lanes take connections from the pool as
concurrency asks for them (at most `size`), hand them from one append to the next through a
free list, and give each one back to the pool once it has sat idle for `idle_s`. So the pool
still owns every connection: `pool.close()` waits at most `idle_s` for lanes that were never
closed, and readers are never starved for longer than that by a burst of appends that ended.

Only session-neutral single statements run on a lane (the append statements): nothing is
reset between them. A lane connection plans them generically (`plan_cache_mode`), set when the
lane takes it and reset by the pool when it goes back: left to choose, PostgreSQL keeps
re-planning the fast-path INSERT ... SELECT, whose generic plan its cost model rates dearer
(counted with callgrind: about 7,000 of the statement's 210,000 instructions).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import asyncpg

Lease = Any  # an asyncpg pool connection proxy
_SESSION_SQL = "SET plan_cache_mode = force_generic_plan"


class AppendLanes:
    """Up to `size` pool connections reused across appends without a pool round trip each."""

    def __init__(self, pool: asyncpg.Pool, size: int, idle_s: float = 0.05) -> None:
        if size < 1:
            raise ValueError("append lanes need at least one connection")
        self._pool = pool
        self._size = size
        self._idle_s = idle_s
        self._idle: list[tuple[Lease, float]] = []  # LIFO: a light load keeps few connections warm
        self._leased = 0  # idle plus busy
        self._waiters: deque[asyncio.Future[Lease | None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def leased(self) -> int:
        """Connections currently taken from the pool (idle or busy)."""
        return self._leased

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run one session-neutral statement on a lane connection."""
        conn = await self._lease()
        try:
            row = await conn.fetchrow(sql, *args)
        except asyncpg.PostgresError as exc:
            # A server error ends the implicit transaction and leaves the connection usable,
            # except for connection errors and operator intervention (class 08 and 57: shutdown,
            # terminated backend, cancelled statement), after which the pool decides.
            sqlstate = str(getattr(exc, "sqlstate", "") or "")
            healthy = not sqlstate.startswith(("08", "57")) and not conn.is_closed()
            self._give_back(conn, healthy=healthy and not conn.is_in_transaction())
            raise
        except BaseException:
            self._give_back(conn, healthy=False)
            raise
        self._give_back(conn)
        return row  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Give every idle connection back to the pool now; busy ones go back when done."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._release(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)

    async def _lease(self) -> Lease:
        while True:
            if self._idle:
                return self._idle.pop()[0]
            if self._closed or self._leased < self._size:
                return await self._acquire()
            waiter: asyncio.Future[Lease | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._give_back(waiter.result())  # handed over just as we were cancelled
                raise
            if conn is not None:
                return conn
            # None: a lane was freed (its connection went back to the pool); take a new one.

    async def _acquire(self) -> Lease:
        self._leased += 1
        try:
            conn = await self._pool.acquire()
        except BaseException:
            self._leased -= 1
            self._wake_one(None)
            raise
        try:
            await conn.execute(_SESSION_SQL)
        except BaseException:
            self._release(conn)
            self._wake_one(None)
            raise
        return conn

    def _give_back(self, conn: Lease, *, healthy: bool = True) -> None:
        if not healthy or self._closed:
            self._release(conn)
            self._wake_one(None)
            return
        if self._wake_one(conn):
            return
        self._idle.append((conn, time.monotonic()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._idle_s, self._trim)

    def _wake_one(self, conn: Lease | None) -> bool:
        """Hand `conn` (or a free slot, for None) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _trim(self) -> None:
        """Give back connections idle for `idle_s`; the oldest idle ones sit first in the list."""
        self._timer = None
        cutoff = time.monotonic() - self._idle_s
        expired = 0
        while expired < len(self._idle) and self._idle[expired][1] <= cutoff:
            expired += 1
        for conn, _ in self._idle[:expired]:
            self._release(conn)
        del self._idle[:expired]
        if self._idle:
            delay = self._idle[0][1] + self._idle_s - time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(max(delay, 0.001), self._trim)

    def _release(self, conn: Lease) -> None:
        self._leased -= 1
        task = asyncio.get_running_loop().create_task(self._release_to_pool(conn))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release_to_pool(self, conn: Lease) -> None:
        # A failed reset makes asyncpg terminate the connection and free its slot; nothing to add.
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

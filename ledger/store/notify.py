"""Coalesced wake-up notifications for subscribers, kept off the append path.

`NOTIFY` inside an append transaction serialises commits (docs/architecture.md#costs: 0.58x measured), so appends
never notify. Instead, a successful append pokes this notifier, which sends at most one
`pg_notify` per `debounce_s` from its own autocommit statement after the append committed.
Subscribers LISTEN for it and also poll every `poll_interval_s`, so a lost or late notification
(another process's writer, a crash between commit and notify) only delays delivery, never loses
an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

CHANNEL = "ledger_events"
_log = logging.getLogger(__name__)


class Notifier:
    """Debounced `pg_notify(CHANNEL)` after appends."""

    def __init__(self, fetchrow: Callable[..., Awaitable[Any]], debounce_s: float = 0.01) -> None:
        """`fetchrow(sql, *args)` runs the session-neutral `pg_notify` (the store's append lanes)."""
        self._fetchrow = fetchrow
        self._debounce_s = debounce_s
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """Ask for a notification soon; cheap and never blocks the caller."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        await asyncio.sleep(self._debounce_s)
        try:
            await self._fetchrow("SELECT pg_notify($1, '')", CHANNEL)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            # Subscribers fall back to polling; a missed wake-up only adds latency.
            _log.warning("ledger_events notification failed: %s", exc)

    async def aclose(self) -> None:
        """Send any pending notification and stop."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""Shared rate budget and the retry loop around one destination call.

Why one budget per destination: every call of every order draws from the same
`rate_per_minute`, and a 429's reset window closes the gate for ALL of them, so after a 429
storm no request leaves before the vendor's window resets (F13). Retries use the clients'
capped exponential backoff with full jitter and never come before Retry-After.

Why the budget lives in PostgreSQL (`SharedRateBudget`, table `fanout_rate_budget`): worker
replicas (one per group of Kafka partitions) and `ledger fanout redrive` / `replay` runs must
share ONE budget per destination (Omnisend: 400/min per brand), and a 429 seen by one process
must hold back the others. Postgres is already shared by every one of those processes (no new
service, no Redis), and the scheme needs one short statement per call and no lock held while
waiting: GCRA ("virtual scheduling"). Each acquire atomically advances the destination's
`next_free_at = greatest(next_free_at, open_at, now) + 60 s / rate` with one
`INSERT ... ON CONFLICT DO UPDATE ... RETURNING` and gets its slot back,
`greatest(now, open_at, old next_free_at - burst tolerance)`; the caller sleeps until the slot.
The burst tolerance allows about one second's worth of calls at once (as the in-process bucket
did). A 429's reset is `hold(seconds)`: `open_at = greatest(open_at, now + seconds)`; a caller
that slept re-reads `open_at` (another process may have pushed it) and queues again if closed.
Times are the server's `clock_timestamp()`, so processes on different hosts agree; waits are
returned as seconds and slept on the local clock. At 400/min this is ~7 row updates per second.
A slot reserved by a caller that then gives up (shutdown) is simply lost: slower, never faster.

`RateBudget` is the in-process variant (aiolimiter + gate) for unit tests and database-less use.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg
from aiolimiter import AsyncLimiter

from consumers.http import AuthFailure, Outcome, Retryable, backoff_delay
from ledger_kernel.settings import DestinationSettings

__all__ = ["Budget", "Closing", "RateBudget", "SharedRateBudget", "call_with_retries"]


class Closing(Exception):
    """The worker is shutting down: abandon the retry loop (nothing recorded, offset not committed)."""


class Budget(Protocol):
    """What the retry loop needs from a rate budget."""

    async def acquire(self) -> None:
        """Return when this call may go out (rate and rate-limit gate)."""

    async def hold(self, seconds: float) -> None:
        """Nobody calls before `seconds` from now (a vendor's Retry-After / rate-limit reset)."""

    @property
    def open_at(self) -> float:
        """When the gate opens, on `time.monotonic()` (as last known by this process)."""


def _burst(rate_per_minute: float) -> tuple[float, float]:
    """(calls per second, bucket size): about one second's worth of calls, at least one."""
    per_second = max(rate_per_minute / 60.0, 1e-6)
    return per_second, max(1.0, per_second)


class RateBudget:
    """In-process: aiolimiter for the steady rate, plus a gate that a rate-limit reset closes."""

    def __init__(self, rate_per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        # A bucket of ~1 s worth of calls: smooth, yet not one call per 150 ms at 400/min.
        per_second, capacity = _burst(rate_per_minute)
        self._limiter = AsyncLimiter(capacity, capacity / per_second)
        self._clock = clock
        self._open_at = 0.0

    async def hold(self, seconds: float) -> None:
        """Nobody calls before `seconds` from now (a vendor's Retry-After / rate-limit reset)."""
        self._open_at = max(self._open_at, self._clock() + seconds)

    @property
    def open_at(self) -> float:
        return self._open_at

    async def _gate(self) -> None:
        """Sleep until the gate opens; it may be pushed further while sleeping (another 429)."""
        for _ in range(1000):
            wait = self._open_at - self._clock()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def acquire(self) -> None:
        await self._gate()
        await self._limiter.acquire()
        await self._gate()  # the gate may have closed while this call waited for a token


# $1 destination, $2 emission interval (s per call), $3 burst tolerance (s). One statement:
# creates the row on first use, advances the schedule, returns (wait for the slot, gate) in s.
_RESERVE = """
WITH t AS (SELECT clock_timestamp() AS now)
INSERT INTO fanout_rate_budget AS b (destination, next_free_at, updated_at)
SELECT $1, t.now + make_interval(secs => $2), t.now FROM t
ON CONFLICT (destination) DO UPDATE
SET next_free_at = greatest(b.next_free_at, b.open_at, EXCLUDED.updated_at) + make_interval(secs => $2),
    updated_at = EXCLUDED.updated_at
RETURNING
    extract(epoch FROM greatest(b.updated_at, b.open_at, b.next_free_at - make_interval(secs => $2 + $3))
                       - b.updated_at)::float8 AS wait,
    extract(epoch FROM greatest(b.open_at, b.updated_at) - b.updated_at)::float8 AS gate
"""

_HOLD = """
WITH t AS (SELECT clock_timestamp() AS now)
INSERT INTO fanout_rate_budget AS b (destination, next_free_at, open_at, updated_at)
SELECT $1, t.now, t.now + make_interval(secs => $2), t.now FROM t
ON CONFLICT (destination) DO UPDATE
SET open_at = greatest(b.open_at, EXCLUDED.open_at), updated_at = EXCLUDED.updated_at
RETURNING extract(epoch FROM greatest(b.open_at, b.updated_at) - b.updated_at)::float8 AS gate
"""

_GATE = """
SELECT extract(epoch FROM greatest(b.open_at, t.now) - t.now)::float8 AS gate
FROM fanout_rate_budget AS b, (SELECT clock_timestamp() AS now) AS t
WHERE b.destination = $1
"""


class SharedRateBudget:
    """One destination's budget shared by every process on the same database (see module doc)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        destination: str,
        rate_per_minute: float,
        *,
        burst: float | None = None,
    ) -> None:
        per_second, default_burst = _burst(rate_per_minute)
        self.pool = pool
        self.destination = destination
        self.interval_s = 1.0 / per_second
        self.burst = max(1.0, burst if burst is not None else default_burst)
        self._tolerance_s = (self.burst - 1.0) * self.interval_s
        self._open_at = 0.0

    def _note_gate(self, gate_s: float) -> None:
        if gate_s > 0:
            self._open_at = max(self._open_at, time.monotonic() + gate_s)

    @property
    def open_at(self) -> float:
        """When the gate opens (monotonic clock), as last seen by this process."""
        return self._open_at

    async def hold(self, seconds: float) -> None:
        """Close the gate for every process of this destination for `seconds` from now."""
        gate = await self.pool.fetchval(_HOLD, self.destination, max(0.0, float(seconds)))
        self._note_gate(float(gate or 0.0))

    async def gate_seconds(self) -> float:
        """Seconds until the shared gate opens (0 when open)."""
        gate = await self.pool.fetchval(_GATE, self.destination)
        self._note_gate(float(gate or 0.0))
        return max(0.0, float(gate or 0.0))

    async def acquire(self) -> None:
        """Reserve the next slot, sleep until it, and make sure no 429 closed the gate meanwhile."""
        for _ in range(1000):
            row = await self.pool.fetchrow(_RESERVE, self.destination, self.interval_s, self._tolerance_s)
            assert row is not None
            self._note_gate(float(row["gate"]))
            wait = float(row["wait"])
            if wait <= 0:
                return  # the slot is now, and it is never before open_at
            await asyncio.sleep(wait)
            if await self.gate_seconds() <= 0:
                return
            # Another process saw a 429 while we slept: this slot is void, queue after the gate.


async def _acquire(budget: Budget, closing: asyncio.Event) -> None:
    """Wait for the budget, but not past shutdown: a 429 reset may close the gate for minutes."""
    if closing.is_set():
        raise Closing
    acquired = asyncio.ensure_future(budget.acquire())
    closed = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({acquired, closed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        acquired.cancel()
        closed.cancel()
    if closing.is_set():
        raise Closing
    acquired.result()


#: Tries at a call answered with a 403 that may be throttling (`AuthFailure.possibly_throttled`)
#: before it counts as an auth failure.
THROTTLED_403_ATTEMPTS = 3


async def call_with_retries(
    attempt_call: Callable[[], Awaitable[Outcome]],
    *,
    budget: Budget,
    settings: DestinationSettings,
    closing: asyncio.Event,
    on_outcome: Callable[[Outcome], None],
    retry_ambiguous: bool = True,
    rng: random.Random | None = None,
) -> Outcome:
    """Call until an outcome that is not Retryable, or `max_attempts` Retryables (returned as is).

    `retry_ambiguous=False` returns an ambiguous Retryable at once: the caller must reconcile
    (Omneo order create) or accept it (Omnisend live events) instead of blind-resending.
    """
    outcome: Outcome = Retryable("not_attempted")
    for attempt in range(1, max(1, settings.max_attempts) + 1):
        await _acquire(budget, closing)
        outcome = await attempt_call()
        on_outcome(outcome)
        retry_after: float | None = None
        if isinstance(outcome, AuthFailure):
            # Omnisend v3 also answers 403 for "blocked after many errors" (docs/connectors.md#mapping, #open-questions):
            # a few spaced tries before halting the destination as an auth failure.
            if not (outcome.possibly_throttled and attempt < THROTTLED_403_ATTEMPTS):
                return outcome
        elif not isinstance(outcome, Retryable):
            return outcome
        else:
            if outcome.ambiguous and not retry_ambiguous:
                return outcome
            retry_after = outcome.retry_after
            if retry_after is not None:
                await budget.hold(retry_after)
        if attempt == settings.max_attempts:
            break
        delay = backoff_delay(
            attempt,
            initial_s=settings.backoff_initial_s,
            max_s=settings.backoff_max_s,
            retry_after=retry_after,
            rng=rng,
        )
        try:
            await asyncio.wait_for(closing.wait(), delay)
        except TimeoutError:
            continue
        raise Closing
    return outcome

"""Shared rate budget and the retry loop around one destination call.

Why one budget per destination and process: every call of every order draws from the same
`rate_per_minute` (aiolimiter), and a 429's reset window closes the gate for ALL of them, so
after a 429 storm no request leaves before the vendor's window resets (F13). Retries use the
clients' capped exponential backoff with full jitter and never come before Retry-After.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from aiolimiter import AsyncLimiter

from consumers.http import Outcome, Retryable, backoff_delay
from ledger.settings import DestinationSettings

__all__ = ["Closing", "RateBudget", "call_with_retries"]


class Closing(Exception):
    """The worker is shutting down: abandon the retry loop (nothing recorded, offset not committed)."""


class RateBudget:
    """aiolimiter for the steady rate, plus a gate that a rate-limit reset closes for everyone."""

    def __init__(self, rate_per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        # A bucket of ~1 s worth of calls: smooth, yet not one call per 150 ms at 400/min.
        per_second = max(rate_per_minute / 60.0, 1e-6)
        capacity = max(1.0, per_second)
        self._limiter = AsyncLimiter(capacity, capacity / per_second)
        self._clock = clock
        self._open_at = 0.0

    def hold(self, seconds: float) -> None:
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


async def call_with_retries(
    attempt_call: Callable[[], Awaitable[Outcome]],
    *,
    budget: RateBudget,
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
        if closing.is_set():
            raise Closing
        await budget.acquire()
        outcome = await attempt_call()
        on_outcome(outcome)
        if not isinstance(outcome, Retryable):
            return outcome
        if outcome.ambiguous and not retry_ambiguous:
            return outcome
        if outcome.retry_after is not None:
            budget.hold(outcome.retry_after)
        if attempt == settings.max_attempts:
            break
        delay = backoff_delay(
            attempt,
            initial_s=settings.backoff_initial_s,
            max_s=settings.backoff_max_s,
            retry_after=outcome.retry_after,
            rng=rng,
        )
        try:
            await asyncio.wait_for(closing.wait(), delay)
        except TimeoutError:
            continue
        raise Closing
    return outcome

"""The retry loop's verdicts on an Omnisend 403, which v3 also uses for error throttling."""

from __future__ import annotations

import asyncio

from consumers.fanout.budget import THROTTLED_403_ATTEMPTS, RateBudget, call_with_retries
from consumers.http import AuthFailure, Outcome, Success
from ledger_kernel.settings import DestinationSettings

SETTINGS = DestinationSettings(
    base_url="http://vendor.test", token="t", rate_per_minute=60_000.0, max_attempts=8,
    backoff_initial_s=0.001, backoff_max_s=0.005,
)  # fmt: skip


async def _call(answers: list[Outcome]) -> tuple[Outcome, int]:
    calls = 0

    async def attempt() -> Outcome:
        nonlocal calls
        calls += 1
        return answers[min(calls, len(answers)) - 1]

    outcome = await call_with_retries(
        attempt,
        budget=RateBudget(60_000.0),
        settings=SETTINGS,
        closing=asyncio.Event(),
        on_outcome=lambda o: None,
    )
    return outcome, calls


async def test_a_403_that_may_be_throttling_is_tried_again_and_can_succeed() -> None:
    outcome, calls = await _call([AuthFailure(403, possibly_throttled=True), Success(200)])
    assert isinstance(outcome, Success)
    assert calls == 2


async def test_a_403_that_persists_halts_after_a_few_tries() -> None:
    outcome, calls = await _call([AuthFailure(403, possibly_throttled=True)])
    assert isinstance(outcome, AuthFailure)
    assert calls == THROTTLED_403_ATTEMPTS


async def test_a_plain_auth_failure_halts_at_once() -> None:
    outcome, calls = await _call([AuthFailure(401), Success(200)])
    assert isinstance(outcome, AuthFailure)
    assert calls == 1

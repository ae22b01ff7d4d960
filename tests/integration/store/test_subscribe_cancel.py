"""A closed subscriber stops: a cancel that lands as its poll times out is never lost."""

from __future__ import annotations

import asyncio
import contextlib
import random

from ledger.store import NO_STREAM, START, EventStore
from tests.integration.store.sample_events import new_stream, noted


async def test_a_cancelled_subscriber_always_stops_even_when_the_cancel_meets_its_poll_timeout(
    store: EventStore,
) -> None:
    rng = random.Random(20261207)
    stopped = 0
    writing = True

    async def write() -> None:  # notifications keep waking the subscribers, as in production
        while writing:
            await store.append(new_stream(), [noted("tick")], NO_STREAM)

    writer = asyncio.create_task(write())
    for _ in range(300):

        async def follow() -> None:
            async with contextlib.aclosing(store.subscribe(START, poll_interval_s=0.001, batch_size=1)) as batches:
                async for _batch in batches:
                    await asyncio.sleep(0)

        task = asyncio.create_task(follow())
        await asyncio.sleep(rng.uniform(0.0, 0.004))
        task.cancel()
        async with asyncio.timeout(5):  # the old wait_for loop polled on forever here
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stopped += task.cancelled()
    writing = False
    await writer
    assert stopped == 300

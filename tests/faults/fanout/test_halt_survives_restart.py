"""A 403 halt is stored with the destination's state: a restart waits for the operator.

And a 403 that carries a rate-limit signature (Omnisend v3 throttles with 403 after many
errors) is backed off and retried instead of halting.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from consumers.fanout.delivery_store import FanoutStore, list_halts
from consumers.fanout.worker import EXIT_HALTED, run_worker
from ledger_kernel.observability import Metrics
from tests.integration.fanout.support import (
    inbox_count,
    make_settings,
    new_topic,
    publish,
    sandbox,
    wait_for,
    worker,
)
from tests.unit.mapping.story import OrderStory

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]


async def test_a_403_halt_survives_a_restart_and_is_lifted_by_the_operator(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    await publish(kafka_bootstrap, topic, story.place())
    async with sandbox("omnisend") as omnisend:
        await omnisend.fault({"status": 403})  # forbidden, no throttling signature
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=omnisend)
        async with worker("omnisend", settings, pool) as first:
            assert await asyncio.wait_for(first, 60) == EXIT_HALTED
        calls_before_restart = len(await omnisend.requests())
        assert [h["status"] for h in await list_halts(pool)] == [403]
        await omnisend.clear_faults()  # the key gets its rights back; the halt stays until lifted

        metrics = Metrics()
        stop = asyncio.Event()
        restarted = asyncio.create_task(
            run_worker("omnisend", settings, stop=stop, pool=pool, metrics=metrics)
        )

        async def waiting_halted() -> bool:
            return (
                metrics.registry.get_sample_value("ledger_fanout_halted", {"destination": "omnisend"}) == 1.0
            )

        await wait_for(waiting_halted, what="restarted worker reports the halt")
        assert len(await omnisend.requests()) == calls_before_restart, "a halted worker calls nobody"
        assert await inbox_count(pool, "omnisend") == 0

        lifted = await FanoutStore(pool, "omnisend").clear_halt()  # `ledger fanout resume`
        assert lifted is not None

        async def delivered() -> bool:
            return await inbox_count(pool, "omnisend") == 1

        await wait_for(delivered, timeout=60, what="delivered after the operator resumed")
        assert metrics.registry.get_sample_value("ledger_fanout_halted", {"destination": "omnisend"}) == 0.0
        stop.set()
        assert await asyncio.wait_for(restarted, 60) == 0
    assert await list_halts(pool) == []


async def test_403s_with_a_rate_limit_signature_back_off_instead_of_halting(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    story = OrderStory()
    async with sandbox("omnisend") as omnisend:
        await omnisend.fault({"status": 403, "retry_after": "1", "count": 4})
        settings = make_settings(database_url, kafka_bootstrap, topic, omnisend=omnisend)
        async with worker("omnisend", settings, pool):
            await publish(kafka_bootstrap, topic, story.place())

            async def delivered() -> bool:
                return await inbox_count(pool, "omnisend") == 1

            await wait_for(delivered, timeout=60, what="delivered after the throttling passed")
        assert [r["status"] for r in await omnisend.requests()] == [403, 403, 403, 403, 200]
    assert await list_halts(pool) == []

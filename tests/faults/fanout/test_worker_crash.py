"""A worker SIGKILLed right after a 2xx (before recording it) causes no second effect; SIGTERM commits."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.harness.kafka import partitions_of
from tests.integration.fanout.support import Sandbox, inbox_count, new_topic, publish, sandbox, wait_for
from tests.unit.mapping.story import OrderStory

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parents[3]


def _env(
    destination: str, box: Sandbox, database_url: str, bootstrap: str, *, topic: str, group: str
) -> dict[str, str]:
    prefix = f"LEDGER_{destination.upper()}__"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(
        {
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LEDGER_KAFKA__EVENTS_TOPIC": topic,
            "LEDGER_LOG_JSON": "true",
            prefix + "BASE_URL": box.url,
            prefix + "TOKEN": box.token,
            prefix + "GROUP_ID": group,
            prefix + "BACKOFF_INITIAL_S": "0.05",
            prefix + "BACKOFF_MAX_S": "0.5",
            prefix + "RATE_PER_MINUTE": "60000",
        }
    )
    return env


async def _start(
    destination: str, env: dict[str, str], *, kill_after_successes: int | None = None
) -> asyncio.subprocess.Process:
    """The worker process; with `kill_after_successes`, the test-only entry that kills itself."""
    entry = ["consumers.fanout", destination]
    if kill_after_successes is not None:
        entry = ["tests.faults.fanout.crashing_worker", destination, str(kill_after_successes)]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        *entry,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _committed(bootstrap: str, topic: str, group: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for partition in await partitions_of(consumer, topic):
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


@pytest.mark.parametrize("destination", ["omneo", "omnisend"])
async def test_sigkill_right_after_2xx_then_restart_has_no_second_effect(
    destination: str, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    topic = await new_topic(kafka_bootstrap, unique_topic)
    group = f"crash-{uuid.uuid4().hex[:8]}"
    story = OrderStory()
    story.place()
    story.pay("20.00")
    story.ship("S1", "L1", "L2")
    async with sandbox(destination) as box:
        await publish(kafka_bootstrap, topic, story.envelopes)
        env = _env(destination, box, database_url, kafka_bootstrap, topic=topic, group=group)

        crashing = await _start(destination, env, kill_after_successes=1)
        assert await asyncio.wait_for(crashing.wait(), 45) == -signal.SIGKILL
        first = await box.requests()
        assert len(first) == 1, "killed right after the first 2xx"
        assert 200 <= first[0]["status"] < 300
        assert await inbox_count(pool, destination) == 0, "the outcome was never recorded"
        assert await _committed(kafka_bootstrap, topic, group) == 0

        worker = await _start(destination, env)
        try:
            await wait_for(
                lambda: _delivered(pool, destination, 3), timeout=45, what="redelivered and recorded"
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(worker.wait(), 30)
        assert code == 0, "SIGTERM: finish, commit, exit 0"
        assert await _committed(kafka_bootstrap, topic, group) == 3

        log = await box.requests()
        state = await box.state()
        if destination == "omneo":
            creates = [r for r in log if r["method"] == "POST" and r["path"] == "/api/v3/orders"]
            assert len(creates) == 1, "no second create: the intent led to a lookup by external_id"
            assert any(r["method"] == "GET" and r["query"].get("filter[external_id]") for r in log)
            assert len(state["orders"]) == 1
            assert [t["external_id"] for t in state["transactions"].values()] == [f"{story.order_id}:S1"]
        else:
            assert list(state["orders"]) == [story.order_id]
            order = state["orders"][story.order_id]
            assert order["fulfillmentStatus"] == "fulfilled"
            assert sum(1 for r in log if r["method"] == "POST" and r["status"] < 300) == 1


async def _delivered(pool: asyncpg.Pool, destination: str, n: int) -> bool:
    return await inbox_count(pool, destination) >= n

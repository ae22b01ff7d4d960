"""A fan-out worker on the three-node cluster keeps delivering through a partition leader's crash."""

from __future__ import annotations

import asyncio
import signal
import uuid

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ledger_app.dev.apache_kafka import KraftCluster, missing_tools
from tests.faults.kafka.support import busiest_partition, partition_states, wait_all_in_sync
from tests.integration.fanout.support import inbox_count, make_settings, publish, sandbox, wait_for, worker
from tests.unit.mapping.story import OrderStory

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason="the cluster tier needs java and mvn"),
]

ORDERS = 40  # per half; each order is placed, paid and shipped: three events


def stories(count: int) -> list[OrderStory]:
    made = []
    for _ in range(count):
        story = OrderStory()
        story.place()
        story.pay("20.00")
        story.ship("S1", "L1", "L2")
        made.append(story)
    return made


async def test_fanout_worker_delivers_every_order_once_through_a_leader_crash_and_restart(
    cluster: KraftCluster, pool: asyncpg.Pool, database_url: str
) -> None:
    bootstrap = cluster.bootstrap_servers
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])
    finally:
        await admin.close()
    await wait_all_in_sync(bootstrap, topic, nodes=3)
    first, second = stories(ORDERS), stories(ORDERS)

    async with sandbox("omnisend") as box:
        # Single calls (no v3 batches for a backlog): the request log then shows every create.
        settings = make_settings(database_url, bootstrap, topic, omnisend=box, batch_size=1)
        async with worker("omnisend", settings, pool):
            await publish(bootstrap, topic, [e for s in first for e in s.envelopes])
            await wait_for(lambda: _delivered(pool, 3 * ORDERS), timeout=120, what="the first half delivered")
            busiest = await busiest_partition(bootstrap, topic)
            leader, _ = (await partition_states(bootstrap, topic))[busiest]
            await asyncio.to_thread(cluster.kill, leader, signal.SIGKILL)
            # The second half is produced and consumed while that node is down (new leaders).
            await publish(bootstrap, topic, [e for s in second for e in s.envelopes])
            await wait_for(
                lambda: _delivered(pool, 6 * ORDERS), timeout=120, what="the second half delivered"
            )
            await asyncio.to_thread(cluster.restart, leader)
            await wait_all_in_sync(bootstrap, topic, nodes=3)

        state = await box.state()
        log = await box.requests()

    for story in [*first, *second]:
        order = state["orders"][story.order_id]
        assert order["fulfillmentStatus"] == "fulfilled"
        assert order["paymentStatus"] == "paid"
    creates = [r for r in log if r["method"] == "POST" and r["status"] < 300]
    assert len(creates) == 2 * ORDERS, "each order created once"


async def _delivered(pool: asyncpg.Pool, n: int) -> bool:
    return await inbox_count(pool, "omnisend") >= n

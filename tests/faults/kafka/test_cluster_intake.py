"""The Kafka intake on the three-node cluster applies every command once through a leader's crash."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ledger.intake import Intake
from ledger.intake.app import Received
from ledger.service import OrderService
from ledger.store import EventStore
from ledger_app.dev.apache_kafka import KraftCluster, missing_tools
from ledger_kernel.settings import KafkaSettings, Settings
from tests.faults.kafka.support import busiest_partition, partition_states, wait_all_in_sync
from tests.harness.kafka import produce
from tests.integration.fanout.support import wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason="the cluster tier needs java and mvn"),
]

COMMANDS = 60  # per half


def place(n: int) -> tuple[bytes, bytes]:
    command = {
        "command": "place_order",
        "idempotency_key": f"cluster-intake-{n:04d}",
        "client_id": "checkout",
        "body": {
            "external_id": f"C-{n}",
            "currency": "USD",
            "total": 19.95,
            "items": [{"line_id": "A", "name": "Mug", "quantity": 1, "price_sell": 19.95}],
        },
    }
    return f"k{n}".encode(), json.dumps(command).encode()


async def test_intake_applies_each_command_once_through_a_leader_crash_and_restart(
    cluster: KraftCluster, store: EventStore, database_url: str
) -> None:
    bootstrap = cluster.bootstrap_servers
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        intake_topic=f"intake-{suffix}",
        rejected_topic=f"rejected-{suffix}",
        events_topic=f"events-{suffix}",
        intake_group=f"intake-{suffix}",
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(t, num_partitions=3, replication_factor=3)
                for t in (kafka.intake_topic, kafka.rejected_topic)
            ]
        )
    finally:
        await admin.close()
    await wait_all_in_sync(bootstrap, kafka.intake_topic, nodes=3)
    intake = Intake(
        Settings(database_url=database_url, kafka=kafka),
        service=OrderService(store),
        backoff_s=lambda attempt: 0.05,
    )
    outcomes: list[str] = []

    async def record(received: Received, outcome: str) -> None:
        outcomes.append(outcome)

    intake.on_outcome = record
    await intake.start()
    try:
        await produce(bootstrap, kafka.intake_topic, [place(n) for n in range(COMMANDS)])
        await wait_for(lambda: _events_at_least(store, COMMANDS), timeout=120, what="first half applied")
        busiest = await busiest_partition(bootstrap, kafka.intake_topic)
        leader, _ = (await partition_states(bootstrap, kafka.intake_topic))[busiest]
        await asyncio.to_thread(cluster.kill, leader, signal.SIGKILL)
        # The second half is produced and consumed while that node is down (new leaders).
        await produce(bootstrap, kafka.intake_topic, [place(n) for n in range(COMMANDS, 2 * COMMANDS)])
        await wait_for(lambda: _events_at_least(store, 2 * COMMANDS), timeout=120, what="second half applied")
        await asyncio.to_thread(cluster.restart, leader)
        await wait_all_in_sync(bootstrap, kafka.intake_topic, nodes=3)
    finally:
        await intake.stop()

    events = await store.pool.fetchval("SELECT count(*) FROM events")
    externals = await store.pool.fetchval("SELECT count(DISTINCT data->>'external_id') FROM events")
    assert events == externals == 2 * COMMANDS, "each command applied exactly once"
    assert set(outcomes) <= {"applied", "replayed"}, "nothing rejected"


async def _events_at_least(store: EventStore, n: int) -> bool:
    count: int = await store.pool.fetchval("SELECT count(*) FROM events")
    return count >= n

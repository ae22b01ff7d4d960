"""Exactly-once publication (`RelaySettings.exactly_once`, ledger/relay/eos.py) on a real broker.

Needs a broker with transactions: these run on Apache Kafka (or a broker named by the
environment / Docker); on a Tansu-only machine the transactional ones are skipped, and the
start-up refusal on Tansu is what is tested there.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import ProducerFenced

from ledger.relay import KafkaPublisher, checkpoint_name
from ledger.relay.eos import KafkaCheckpoint, read_checkpoint
from ledger.relay.relay import LeadershipLost, Relay
from ledger.store import EventStore
from ledger_app.dev.broker import TansuBroker
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import Settings
from tests.harness.kafka import CuttableBroker, kafka_choice, read_to_end
from tests.integration.relay.support import (
    check_topic,
    committed_events,
    relay_env,
    relay_settings,
    settled_head,
)
from tests.integration.relay.test_relay import append_orders, running_relay, wait_for_checkpoint

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[3]
needs_transactions = pytest.mark.skipif(
    kafka_choice() == "tansu", reason="the session's broker is Tansu, which has no transactions"
)


def eos_settings(database_url: str, bootstrap: str, topic: str, *, batch_size: int = 10) -> Settings:
    settings = relay_settings(database_url, bootstrap, topic, batch_size=batch_size)
    settings.relay.exactly_once = True
    return settings


@needs_transactions
async def test_exactly_once_relay_commits_each_batch_with_its_checkpoint_and_resumes_from_kafka(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = eos_settings(database_url, kafka_bootstrap, unique_topic)
    await append_orders(store, orders=6, updates=2)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    name = checkpoint_name(unique_topic)
    in_kafka = await read_checkpoint(kafka_bootstrap, f"{unique_topic}.checkpoints", name, 5_000)
    assert in_kafka is not None
    head = await settled_head(pool)
    assert in_kafka.checkpoint == head  # the last transaction's checkpoint is the log's head
    assert sum(in_kafka.offsets.values()) > 0
    # PostgreSQL's checkpoint is moved back: the relay must resume from Kafka's, not re-publish.
    await pool.execute("UPDATE checkpoints SET tx = '0'::xid8, position = 0 WHERE name = $1", name)
    await append_orders(store, orders=4, updates=1)
    committed = await committed_events(pool)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    records = await read_to_end(kafka_bootstrap, unique_topic, isolation_level="read_committed")
    check = check_topic(records, committed)
    assert check.ok, check
    assert check.duplicates == 0
    assert len(records) == len(committed)


@needs_transactions
async def test_checkpoints_topic_is_created_compacted_by_the_relay(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = eos_settings(database_url, kafka_bootstrap, unique_topic)
    await append_orders(store, orders=1, updates=1)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, f"{unique_topic}.checkpoints")]
        )
    finally:
        await admin.close()
    configs = {entry[0]: entry[1] for entry in described.resources[0][4]}
    assert configs["cleanup.policy"] == "compact"


@needs_transactions
async def test_an_aborted_transaction_is_neither_seen_by_read_committed_consumers_nor_taken_as_checkpoint(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    """A publish whose commit never happened (the relay died mid-transaction): the next relay's
    producer aborts it, and resumes from the last committed checkpoint."""
    settings = eos_settings(database_url, kafka_bootstrap, unique_topic, batch_size=5)
    await append_orders(store, orders=3, updates=1)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    before = await read_checkpoint(
        kafka_bootstrap, f"{unique_topic}.checkpoints", checkpoint_name(unique_topic), 5_000
    )
    await append_orders(store, orders=2, updates=1)
    committed = await committed_events(pool)
    # A zombie's half-done transaction: records sent and acknowledged, never committed.
    zombie = KafkaPublisher(
        settings.kafka,
        kafka_bootstrap,
        unique_topic,
        exactly_once=True,
        checkpoint_key=checkpoint_name(unique_topic),
    )
    await zombie.start({})
    producer = zombie._producer
    assert producer is not None
    await producer.begin_transaction()
    await (await producer.send(unique_topic, b'{"not": "an event"}', key=b"zombie", partition=0))
    after_zombie = await read_checkpoint(
        kafka_bootstrap, f"{unique_topic}.checkpoints", checkpoint_name(unique_topic), 5_000
    )
    assert after_zombie == before  # the open transaction is not a checkpoint
    try:
        async with running_relay(settings, pool):
            await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
        with pytest.raises(ProducerFenced):  # the relay's start fenced the zombie
            await producer.commit_transaction()
    finally:
        await zombie.close()
    records = await read_to_end(kafka_bootstrap, unique_topic, isolation_level="read_committed")
    check = check_topic(records, committed)
    assert check.ok, check
    assert (check.duplicates, len(records)) == (0, len(committed))


@needs_transactions
async def test_a_fenced_relay_steps_down_instead_of_publishing_beside_the_new_one(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = eos_settings(database_url, kafka_bootstrap, unique_topic, batch_size=5)
    await append_orders(store, orders=2, updates=1)
    stop = asyncio.Event()
    old = Relay(settings, pool, stop=stop, metrics=Metrics(), lag_interval_s=0.1)
    task = asyncio.create_task(old.run())
    try:
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
        newer = KafkaPublisher(settings.kafka, kafka_bootstrap, unique_topic, exactly_once=True)
        await newer.start()  # the same transactional id: fences the old relay's producer
        try:
            await append_orders(store, orders=1, updates=0)
            with pytest.raises(LeadershipLost, match="fenced"):
                await asyncio.wait_for(task, 30)
        finally:
            await newer.close()
    finally:
        stop.set()
        if not task.done():
            await asyncio.wait_for(task, 30)


def test_kafka_checkpoint_round_trips_position_and_offsets() -> None:
    from ledger.store import Checkpoint

    value = KafkaCheckpoint(Checkpoint(812, 44), {2: 10, 0: 7})
    assert KafkaCheckpoint.decode(value.encode()) == value


@pytest.mark.slow
async def test_exactly_once_on_a_broker_without_transactions_is_a_start_up_error_exit_78(
    database_url: str, unique_topic: str, tmp_path: Path
) -> None:
    """Tansu has no transactional producer: asking for exactly-once there stops the relay at
    start-up with one line and EX_CONFIG, never at-least-once behind the operator's back."""
    with TansuBroker() as broker:
        settings = relay_settings(database_url, broker.bootstrap_servers, unique_topic)
        env = {**os.environ, **relay_env(settings), "PYTHONPATH": str(REPO)}
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "ledger.relay", "--exactly-once"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 78, done.stderr.decode()[-2000:]
    assert b"ledger: exactly-once publication refused" in done.stderr
    assert b"Tansu has none" in done.stderr


@needs_transactions
async def test_republish_reaches_the_checkpoint_committed_in_kafka_when_postgres_lags_it(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    """PostgreSQL's checkpoint may be one publish behind Kafka's (a crash between the two): a
    re-publish must cover up to where the exactly-once relay resumes, Kafka's."""
    from ledger.relay.republish import _relay_checkpoint

    settings = eos_settings(database_url, kafka_bootstrap, unique_topic)
    await append_orders(store, orders=2, updates=1)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    head = await settled_head(pool)
    await pool.execute(
        "UPDATE checkpoints SET tx = '0'::xid8, position = 0 WHERE name = $1", checkpoint_name(unique_topic)
    )
    assert await _relay_checkpoint(settings, pool, unique_topic) == head
    settings.relay.exactly_once = False  # an at-least-once relay resumes from PostgreSQL's
    assert await _relay_checkpoint(settings, pool, unique_topic) == (0, 0)


def broker_errors(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.relay_broker_errors.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def test_a_broker_outage_while_publishing_neither_loses_nor_duplicates_an_event(
    store: EventStore,
    pool: asyncpg.Pool,
    database_url: str,
    cuttable_broker: CuttableBroker,
    unique_topic: str,
) -> None:
    """Connections cut while batches are published (a commit may land with its answer lost):
    the relay re-reads its checkpoint from Kafka after reconnecting instead of re-sending."""
    if cuttable_broker.kind != "apache":
        pytest.skip("exactly-once needs a broker with transactions")
    settings = eos_settings(database_url, cuttable_broker.bootstrap_servers, unique_topic, batch_size=20)
    settings.kafka.request_timeout_ms = 3000
    async with running_relay(settings, pool) as metrics:
        await append_orders(store, orders=10, updates=2)
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
        for _ in range(2):
            errors = broker_errors(metrics)
            writes = asyncio.create_task(append_orders(store, orders=20, updates=2))
            cuttable_broker.cut()
            deadline = asyncio.get_running_loop().time() + 60
            while broker_errors(metrics) == errors:  # a publish failed against the cut broker
                assert asyncio.get_running_loop().time() < deadline, "the relay never met the outage"
                await asyncio.sleep(0.05)
            cuttable_broker.restore()
            await writes
            await wait_for_checkpoint(pool, unique_topic, await settled_head(pool), timeout_s=60)
    committed = await committed_events(pool)
    records = await read_to_end(
        cuttable_broker.bootstrap_servers, unique_topic, isolation_level="read_committed"
    )
    check = check_topic(records, committed)
    assert check.ok, check
    assert (check.duplicates, len(records)) == (0, len(committed))


@needs_transactions
async def test_switching_modes_back_and_forth_never_publishes_an_event_twice(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    """Exactly-once, then at-least-once (PostgreSQL's checkpoint moves past Kafka's), then
    exactly-once again: it resumes from the later of the two, not from Kafka's stale one."""
    settings = eos_settings(database_url, kafka_bootstrap, unique_topic)
    for exactly_once in (True, False, True):
        settings.relay.exactly_once = exactly_once
        await append_orders(store, orders=3, updates=1)
        async with running_relay(settings, pool):
            await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    committed = await committed_events(pool)
    records = await read_to_end(kafka_bootstrap, unique_topic, isolation_level="read_committed")
    check = check_topic(records, committed)
    assert check.ok, check
    assert (check.duplicates, len(records)) == (0, len(committed))

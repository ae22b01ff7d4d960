"""The relay on a three-node Apache Kafka cluster while brokers crash: nothing committed is lost.

Three KRaft nodes on loopback (each broker and controller), the relay's topic at replication 3,
`min.insync.replicas=2`, the relay's producer idempotent with `acks=all`. While writers append
a steady stream over many orders (at least `EVENTS` events) and the relay publishes it, the
leader of the busiest partition is SIGKILLed `LEADER_KILLS` times (restarted each time, and
the next kill waits until every replica is back in sync), then one follower is stopped for
`FOLLOWER_DOWN_S` seconds. Afterwards a `read_committed` consumer reads the topic: every
committed event is there, each order's versions in order, duplicates byte-identical. The counts
are printed (`-s` shows them; CI's log keeps them).

It runs twice: with the at-least-once relay (idempotent producer) and with the exactly-once relay
(`LEDGER_RELAY__EXACTLY_ONCE`, ledger/relay/eos.py: a transaction per publish with its checkpoint,
the transaction coordinator's broker among those killed), where duplicates must be zero.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger.store import NO_STREAM, EventStore
from ledger_app.dev.apache_kafka import KraftCluster, missing_tools
from tests.faults.kafka.support import busiest_partition, partition_states, wait_all_in_sync
from tests.faults.relay.test_relay_faults import RelayProcess, wait_caught_up
from tests.harness.kafka import partitions_of
from tests.integration.relay.support import (
    check_topic,
    committed_events,
    placed,
    relay_settings,
    status,
    stream_of,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing_tools()), reason="the cluster tier needs java and mvn"),
]

# ruff: noqa: PLR0917 - pytest fixtures are positional by nature

EVENTS = 20_000
PARTITIONS = 6
LEADER_KILLS = 3
FOLLOWER_DOWN_S = 30.0
WRITERS = 6
SEED = 20261207


class Appended:
    """How many events the writers appended; `reach(n)` waits until that many were."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    def add(self, events: int) -> None:
        self.count += events
        for target, reached in self._waiters:
            if self.count >= target:
                reached.set()

    async def reach(self, target: int) -> None:
        reached = asyncio.Event()
        self._waiters.append((target, reached))
        if self.count >= target:
            reached.set()
        await reached.wait()


async def steady_writer(
    store: EventStore, rng: random.Random, appended: Appended, stop: asyncio.Event, errors: list[str]
) -> None:
    """Appends 1-3 events at a time to its own orders (new or existing) until told to stop."""
    versions: dict[uuid.UUID, int] = {}
    while not stop.is_set():
        if not versions or rng.random() < 0.2:
            order_id = uuid.uuid4()
            events = [placed(order_id)] + [status(f"s{i}") for i in range(rng.randint(0, 2))]
            expected: int = NO_STREAM
        else:
            order_id = rng.choice(list(versions))
            events = [status(f"s{versions[order_id] + i}") for i in range(rng.randint(1, 3))]
            expected = versions[order_id]
        try:
            result = await store.append(stream_of(order_id), events, expected)
        except Exception as exc:  # the write path never waits for Kafka: every append must succeed
            errors.append(repr(exc))
            continue
        versions[order_id] = result.version
        appended.add(len(events))
        await asyncio.sleep(0.02 * rng.uniform(0.5, 1.5))


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
async def test_relay_on_three_brokers_loses_nothing_while_leaders_are_killed_and_a_follower_is_down(
    cluster: KraftCluster,
    pool: asyncpg.Pool,
    store: EventStore,
    database_url: str,
    tmp_path: Path,
    mode: str,
) -> None:
    bootstrap = cluster.bootstrap_servers
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    settings = relay_settings(
        database_url, bootstrap, topic, partitions=PARTITIONS, request_timeout_ms=10_000
    )
    relay = RelayProcess(settings, tmp_path / "relay.log")
    relay.env["LEDGER_KAFKA__ENABLE_IDEMPOTENCE"] = "true"
    relay.env["LEDGER_RELAY__EXACTLY_ONCE"] = str(mode == "exactly_once").lower()
    relay.start()
    rng = random.Random(SEED)
    stop = asyncio.Event()
    appended = Appended()
    errors: list[str] = []
    writers = [
        asyncio.create_task(steady_writer(store, random.Random(rng.random()), appended, stop, errors))
        for _ in range(WRITERS)
    ]
    kills = 0
    try:
        await relay.started(timeout_s=60)
        await appended.reach(EVENTS // 10)
        await wait_all_in_sync(bootstrap, topic, nodes=3)

        for _ in range(LEADER_KILLS):
            busiest = await busiest_partition(bootstrap, topic)
            leader, _ = (await partition_states(bootstrap, topic))[busiest]
            await asyncio.to_thread(cluster.kill, leader, signal.SIGKILL)
            kills += 1
            await asyncio.sleep(2.0)  # publishing goes on against the new leader meanwhile
            await asyncio.to_thread(cluster.restart, leader)
            await wait_all_in_sync(bootstrap, topic, nodes=3)

        busiest = await busiest_partition(bootstrap, topic)
        leader, isr = (await partition_states(bootstrap, topic))[busiest]
        follower = min(isr - {leader})
        await asyncio.to_thread(cluster.kill, follower, signal.SIGTERM)
        await asyncio.sleep(FOLLOWER_DOWN_S)
        await asyncio.to_thread(cluster.restart, follower)
        await wait_all_in_sync(bootstrap, topic, nodes=3)

        await appended.reach(EVENTS)
        stop.set()
        await asyncio.gather(*writers)
        await wait_caught_up(pool, store, topic, timeout_s=120)
        assert relay.terminate() == 0
    finally:
        stop.set()
        for task in writers:
            task.cancel()
        relay.stop_quietly()

    assert not errors
    committed = await committed_events(pool)
    check = check_topic(await read_committed(bootstrap, topic), committed)
    print(
        f"\ncluster failover ({mode}): events {len(committed)} records {check.records} kills {kills}"
        f" (+1 follower down {FOLLOWER_DOWN_S:.0f}s) lost {len(check.missing)}"
        f" duplicates {check.duplicates} inversions {len(check.out_of_order)}"
    )
    assert len(committed) >= EVENTS
    assert kills == LEADER_KILLS
    assert not check.missing
    assert not check.out_of_order
    assert not check.differing_duplicates
    assert not check.wrong_key
    if mode == "exactly_once":
        assert check.duplicates == 0


async def read_committed(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[object]:
    """Every committed record of `topic` up to its end offsets, through a read_committed consumer."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    records: list[object] = []
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await partitions_of(consumer, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "topic not read to its end in time"
            for part in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records

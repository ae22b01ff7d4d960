"""The relay and a broker that lost data: a restarted in-memory broker, a topic re-created.

Issue 23 B. Before, the relay kept producing from cached metadata after Tansu restarted empty,
the broker acknowledged, and the checkpoint moved past events nobody could read. Now the relay
stops (log line, `ledger_relay_broker_data_lost`, `/readyz` 503 with the reason), its checkpoint
stays where the broker's data ends, and `ledger relay republish` brings every event back in
order, after which the relay resumes by itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnknownTopicOrPartitionError

from ledger.relay import checkpoint_name
from ledger.relay.relay import run_relay
from ledger.relay.topics import broker_view, forbid_topic_auto_creation
from ledger.store import NO_STREAM, Checkpoint, EventStore
from ledger_app.dev.broker import TansuBroker, free_port
from ledger_kernel.observability import Metrics, Readiness, serve_ops
from ledger_kernel.settings import Settings
from tests.integration.relay.support import (
    check_topic,
    committed_events,
    placed,
    read_to_end,
    relay_env,
    relay_settings,
    settled_head,
    status,
    stream_of,
)

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


class RestartableTansu:
    """A Tansu of the test's own on a fixed port: `kill()` SIGKILLs it, `start()` brings up an empty one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.broker: TansuBroker | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.broker = TansuBroker(port=self.port).start()

    def kill(self) -> None:
        assert self.broker is not None
        assert self.broker.process is not None
        self.broker.process.send_signal(signal.SIGKILL)
        self.broker.process.wait(timeout=10)
        self.broker = None

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()


@pytest.fixture
def tansu() -> Iterator[RestartableTansu]:
    broker = RestartableTansu()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class RelayUnderTest:
    """`run_relay` in this loop with its own metrics, readiness and ops port (`/readyz`)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = Metrics()
        self.readiness = Readiness(broker="connecting to the broker")
        self.port = free_port()
        self.server = serve_ops(self.port, self.metrics, self.readiness, host="127.0.0.1")

    def lost(self, reason: str) -> float:
        value: float = self.metrics.relay_broker_data_lost.labels(reason=reason)._value.get()
        return value

    async def readyz(self) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{self.port}/readyz")

    async def checkpoint(self) -> Checkpoint | None:
        row = await self.pool.fetchrow(
            "SELECT tx, position FROM checkpoints WHERE name = $1",
            checkpoint_name(self.settings.kafka.events_topic),
        )
        return None if row is None else Checkpoint(row["tx"], row["position"])


@asynccontextmanager
async def relay_running(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[RelayUnderTest]:
    relay = RelayUnderTest(settings, pool)
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_relay(settings, pool=pool, stop=stop, metrics=relay.metrics, readiness=relay.readiness)
    )
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        relay.server.shutdown()
        relay.server.server_close()


async def until(predicate: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.1)


async def append_orders(store: EventStore, n: int) -> list[uuid.UUID]:
    """`n` new orders, each placed then moved on twice (three events, so order matters)."""
    ids = [uuid.uuid4() for _ in range(n)]
    for order_id in ids:
        await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
    for order_id in ids:
        await store.append(stream_of(order_id), [status("processing"), status("completed")], 1)
    return ids


async def caught_up(relay: RelayUnderTest) -> None:
    head = await settled_head(relay.pool)

    async def reached() -> bool:
        saved = await relay.checkpoint()
        return saved is not None and saved >= head

    await until(reached, "the relay did not catch up")


def republish_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`ledger relay republish ...` as an operator runs it, with the test's settings."""
    env = {**os.environ, **relay_env(settings), "PYTHONPATH": str(REPO), "LEDGER_LOG_JSON": "false"}
    return subprocess.run(
        [sys.executable, "-m", "ledger_app.cli", "relay", "republish", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_broker_restarted_empty_stops_the_relay_without_advancing_its_checkpoint_and_republish_restores_every_event_in_order(
    store: EventStore, pool: asyncpg.Pool, database_url: str, tansu: RestartableTansu, unique_topic: str
) -> None:
    settings = relay_settings(database_url, tansu.bootstrap_servers, unique_topic, backoff_max_s=0.5)
    async with relay_running(settings, pool) as relay:
        before = await append_orders(store, 20)
        await caught_up(relay)
        checkpoint_at_kill = await relay.checkpoint()
        tansu.kill()
        during = await append_orders(store, 20)
        for order_id in before[:10]:  # older orders move on while the broker is away
            await store.append(stream_of(order_id), [status("cancelled")], 3)
        tansu.start()  # empty: Tansu kept its topics in memory

        await until(
            lambda: asyncio.sleep(0, relay.lost("topic_missing") == 1),
            "the relay did not notice that the broker lost its topic",
        )
        ready = await relay.readyz()
        assert ready.status_code == 503
        assert "broker lost data (topic_missing)" in ready.json()["reasons"]["broker"]
        after = await append_orders(store, 20)
        # Held: nothing published, nothing checkpointed over records the broker does not hold,
        # and nobody re-created the topic behind the relay's back.
        assert await relay.checkpoint() == checkpoint_at_kill
        view = await broker_view(tansu.bootstrap_servers, unique_topic, 5000)
        assert view.partitions is None

        done = await asyncio.to_thread(republish_cli, settings, "--from-position", "0")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "re-published" in done.stdout

        await until(lambda: asyncio.sleep(0, relay.lost("topic_missing") == 0), "the relay did not resume")
        await caught_up(relay)
        assert (await relay.readyz()).status_code == 200

    committed = await committed_events(pool)
    assert len(committed) == (len(before) + len(during) + len(after)) * 3 + 10
    records = await read_to_end(tansu.bootstrap_servers, unique_topic)
    check = check_topic(records, committed)
    assert check.ok, (sorted(check.missing)[:5], check.out_of_order[:5], check.differing_duplicates[:5])


async def test_a_topic_recreated_under_the_relay_stops_it_before_its_checkpoint_passes_the_lost_records(
    store: EventStore, pool: asyncpg.Pool, database_url: str, tansu: RestartableTansu, unique_topic: str
) -> None:
    """Deleted and re-created with the same partitions while the relay's connection stays up: the
    produce is acknowledged at offset 0 of the new topic, below what was acknowledged before."""
    settings = relay_settings(database_url, tansu.bootstrap_servers, unique_topic, backoff_max_s=0.5)
    async with relay_running(settings, pool) as relay:
        orders = await append_orders(store, 10)
        await caught_up(relay)
        held_at = await relay.checkpoint()
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([unique_topic])
            await admin.create_topics([NewTopic(unique_topic, num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()
        # Orders already published: their partitions had acknowledged records before.
        for order_id in orders:
            await store.append(stream_of(order_id), [status("cancelled")], 3)

        await until(
            lambda: asyncio.sleep(0, relay.lost("offsets_regressed") + relay.lost("topic_missing") == 1),
            "the relay did not stop on the re-created topic",
        )
        assert await relay.checkpoint() == held_at
        assert (await relay.readyz()).status_code == 503


async def test_a_topic_recreated_with_other_partitions_is_a_clear_stop_and_republish_refuses_it(
    store: EventStore, pool: asyncpg.Pool, database_url: str, tansu: RestartableTansu, unique_topic: str
) -> None:
    settings = relay_settings(database_url, tansu.bootstrap_servers, unique_topic, backoff_max_s=0.5)
    async with relay_running(settings, pool) as relay:
        orders = await append_orders(store, 10)
        await caught_up(relay)
        held_at = await relay.checkpoint()
        tansu.kill()
        tansu.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(unique_topic, num_partitions=5, replication_factor=1)])
        finally:
            await admin.close()
        for order_id in orders:
            await store.append(stream_of(order_id), [status("cancelled")], 3)

        await until(
            lambda: asyncio.sleep(0, relay.lost("partitions_changed") == 1),
            "the relay did not say the topic has other partitions",
        )
        reason = (await relay.readyz()).json()["reasons"]["broker"]
        assert "has 5 partitions, the settings say 3" in reason
        assert await relay.checkpoint() == held_at

        refused = await asyncio.to_thread(republish_cli, settings, "--from-position", "0")
        assert refused.returncode != 0
        assert "has 5 partitions, the settings say 3" in refused.stdout + refused.stderr
        assert await relay.checkpoint() == held_at


async def test_a_consumer_asking_for_a_missing_topic_does_not_create_it(
    tansu: RestartableTansu, unique_topic: str
) -> None:
    """aiokafka asks brokers to auto-create every topic it looks up; no process of ours does."""
    forbid_topic_auto_creation()
    consumer = AIOKafkaConsumer(
        unique_topic, bootstrap_servers=tansu.bootstrap_servers, group_id="g", request_timeout_ms=2000
    )
    with pytest.raises(UnknownTopicOrPartitionError):
        await consumer.start()  # its metadata request for the topic was answered: "no such topic"
    await consumer.stop()
    view = await broker_view(tansu.bootstrap_servers, unique_topic, 5000)
    assert view.partitions is None


async def test_republish_from_a_time_sends_exactly_the_events_recorded_since_then_byte_identical_in_log_order(
    store: EventStore, pool: asyncpg.Pool, database_url: str, tansu: RestartableTansu, unique_topic: str
) -> None:
    from ledger.relay.republish import republish

    settings = relay_settings(database_url, tansu.bootstrap_servers, unique_topic)
    async with relay_running(settings, pool) as relay:
        await append_orders(store, 5)
        await caught_up(relay)
        since = await pool.fetchval("SELECT clock_timestamp()")
        later = await append_orders(store, 3)
        await caught_up(relay)
    result = await republish(settings, from_time=since, pool=pool)
    assert result.events == len(later) * 3
    committed = await committed_events(pool)
    records = await read_to_end(tansu.bootstrap_servers, unique_topic)
    assert len(records) == len(committed) + result.events
    check = check_topic(records, committed)
    assert check.ok, check
    assert check.duplicates == result.events  # each a byte-identical copy (checked by `ok`)
    later_streams = {stream_of(order_id) for order_id in later}
    assert {c[1] for c in committed[-result.events :]} == later_streams

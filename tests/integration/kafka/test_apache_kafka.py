"""The Maven-fetched Apache Kafka (ledger/dev/apache_kafka.py) is a full broker: the producer
features Tansu lacks work on it, and a node keeps its data across a crash."""

from __future__ import annotations

import signal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ledger_app.dev.apache_kafka import KraftCluster, missing_tools
from tests.harness.kafka import consume, create_topic, kafka_choice, produce

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(bool(missing_tools()), reason="Apache Kafka needs java and mvn"),
]


@pytest.mark.skipif(kafka_choice() != "apache", reason="the session's broker is not Apache Kafka")
async def test_transactional_producer_commits_and_aborts_and_read_committed_sees_only_commits(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    await create_topic(kafka_bootstrap, unique_topic, partitions=1)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"tx-{unique_topic}", enable_idempotence=True
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(unique_topic, b"committed", key=b"k")
        await producer.begin_transaction()
        await producer.send_and_wait(unique_topic, b"aborted", key=b"k")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(unique_topic, b"last", key=b"k")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        unique_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[bytes] = []
    try:
        while b"last" not in seen:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                seen.extend(r.value for r in part)
    finally:
        await consumer.stop()
    assert seen == [b"committed", b"last"]


async def test_a_node_killed_with_sigkill_restarts_on_its_data_with_every_acknowledged_record() -> None:
    with KraftCluster() as cluster:
        bootstrap = cluster.bootstrap_servers
        await create_topic(bootstrap, "kept", partitions=2)
        await produce(bootstrap, "kept", [(f"k{i}".encode(), f"v{i}".encode()) for i in range(50)])

        cluster.kill(1, signal.SIGKILL)
        assert not cluster.node(1).alive()
        cluster.restart(1)

        records = await consume(bootstrap, "kept", count=50, timeout_s=60)
        assert sorted(r.value for r in records if r.value is not None) == sorted(
            f"v{i}".encode() for i in range(50)
        )

"""The harness broker is a real Kafka-protocol peer: topics, keyed partitioning, commits, outages."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from tests.harness.kafka import CuttableBroker, consume, consumer, create_topic, produce

pytestmark = pytest.mark.kafka


async def test_messages_with_one_key_land_on_one_partition_in_order(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    await create_topic(kafka_bootstrap, unique_topic, partitions=3)
    sent = [(b"order-a", f"a{i}".encode()) for i in range(20)] + [
        (b"order-b", f"b{i}".encode()) for i in range(20)
    ]
    await produce(kafka_bootstrap, unique_topic, sent)

    records = await consume(kafka_bootstrap, unique_topic, count=40)

    assert len(records) == 40
    by_key: dict[bytes, list[tuple[int, bytes]]] = {}
    for r in records:
        assert r.key is not None
        assert r.value is not None
        by_key.setdefault(r.key, []).append((r.partition, r.value))
    for key, prefix in ((b"order-a", "a"), (b"order-b", "b")):
        partitions = {p for p, _ in by_key[key]}
        assert len(partitions) == 1
        assert [v for _, v in by_key[key]] == [f"{prefix}{i}".encode() for i in range(20)]


async def test_committed_offsets_survive_consumer_restart(kafka_bootstrap: str, unique_topic: str) -> None:
    await create_topic(kafka_bootstrap, unique_topic, partitions=1)
    await produce(kafka_bootstrap, unique_topic, [(None, f"m{i}".encode()) for i in range(5)])
    tp = TopicPartition(unique_topic, 0)
    async with consumer(kafka_bootstrap, unique_topic, group_id=f"g-{unique_topic}") as c:
        got: list[ConsumerRecord[bytes, bytes]] = []
        while len(got) < 3:
            for part in (await c.getmany(timeout_ms=200, max_records=3 - len(got))).values():
                got.extend(part)
        await c.commit({tp: got[-1].offset + 1})

    async with consumer(kafka_bootstrap, unique_topic, group_id=f"g-{unique_topic}") as c:
        rest = []
        for _ in range(25):
            for part in (await c.getmany(timeout_ms=200)).values():
                rest.extend(part)
            if len(rest) >= 2:
                break

    assert [r.value for r in rest] == [b"m3", b"m4"]


async def test_cut_broker_refuses_producers_and_keeps_data_after_restore(
    cuttable_broker: CuttableBroker,
) -> None:
    bootstrap = cuttable_broker.bootstrap_servers
    await create_topic(bootstrap, "outage", partitions=1)
    await produce(bootstrap, "outage", [(None, b"before")])

    cuttable_broker.cut()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=1000)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(producer.start(), timeout=10)
    await producer.stop()

    cuttable_broker.restore()
    await produce(bootstrap, "outage", [(None, b"after")])
    records = await consume(bootstrap, "outage", count=2)
    assert [r.value for r in records] == [b"before", b"after"]

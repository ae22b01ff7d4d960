"""Helpers of the cluster tier: which node leads what, and waiting for replicas to catch up."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.harness.kafka import partitions_of


async def partition_states(bootstrap: str, topic: str) -> dict[int, tuple[int, set[int]]]:
    """partition -> (leader node, in-sync replicas), as the cluster reports them now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {p["partition"]: (p["leader"], set(p["isr"])) for p in described["partitions"]}


async def busiest_partition(bootstrap: str, topic: str) -> int:
    """The partition holding the most records so far."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in sorted(await partitions_of(consumer, topic))]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    busiest: int = max(parts, key=lambda tp: ends[tp]).partition
    return busiest


async def wait_all_in_sync(bootstrap: str, topic: str, nodes: int, timeout_s: float = 120.0) -> None:
    """Until every partition has a live leader and all `nodes` replicas in sync."""
    deadline = time.monotonic() + timeout_s
    states: dict[int, tuple[int, set[int]]] = {}
    while True:
        try:
            states = await partition_states(bootstrap, topic)
            if states and all(leader >= 0 and len(isr) == nodes for leader, isr in states.values()):
                return
        except Exception:  # a metadata request to a node that just died; ask again
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, f"replicas not back in sync: {states}"
        await asyncio.sleep(0.25)

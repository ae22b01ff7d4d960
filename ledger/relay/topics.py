"""What the broker holds of the events topic, and the rule that nothing of ours auto-creates topics.

Why: a broker can lose data behind a client's back. Tansu keeps topics in memory, so a restart
empties it; on a real cluster a topic can be deleted and re-created. aiokafka keeps producing
from cached metadata and the broker acknowledges (Tansu answers a produce to a topic it no longer
has at offset 0), so an acknowledgement alone does not prove the broker holds the records. The
relay therefore compares what the broker holds (`broker_view`) with the end offsets it had
acknowledged and saved (`check_holds`), and stops with `BrokerDataLost` when they disagree.

Auto-creation: aiokafka asks for it in every metadata request (no option turns it off), and a
broker that allows it then creates a missing topic with its default partition count as soon as
a consumer or producer asks about it: the relay then refused to publish (another partition
count), or worse, records went to a topic nobody republished. `forbid_topic_auto_creation`
makes every metadata request of this process say no; topics are created explicitly, with the
configured partitions, by the relay (the first time), `ledger relay republish`, or their owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.metadata import MetadataRequest


def forbid_topic_auto_creation() -> None:
    """Make every metadata request of this process's Kafka clients refuse topic auto-creation.

    aiokafka builds `MetadataRequest(topics)` in its client and defaults the request's
    `allow_auto_topic_creation` to true. Rebinding the name its client module looks up to a
    partial with `False` is the equivalent of Java's `allow.auto.create.topics=false` for
    producers, consumers (FastStream's included) and admin clients alike. Idempotent.
    """
    modules: tuple[Any, ...] = (aiokafka.client, aiokafka.admin.client)
    for module in modules:
        if not isinstance(module.MetadataRequest, functools.partial):
            module.MetadataRequest = functools.partial(MetadataRequest, allow_auto_topic_creation=False)


class BrokerDataLost(Exception):
    """The broker does not hold what the relay had acknowledged; publishing must stop.

    `reason` is one of `topic_missing`, `partitions_changed`, `offsets_regressed` (a label of
    the `ledger_relay_broker_data_lost` metric and the relay's `/readyz` answer).
    """

    def __init__(self, reason: str, detail: str, **facts: Any) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.facts = facts


@dataclass(frozen=True)
class TopicView:
    """The broker's answer about one topic: None partitions when it does not have the topic."""

    partitions: int | None
    ends: dict[int, int]


async def broker_view(bootstrap_servers: str, topic: str, request_timeout_ms: int) -> TopicView:
    """The topic's partition count and end offsets, as the broker sees them now (never creates it)."""
    forbid_topic_auto_creation()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return TopicView(None, {})
        [described] = await admin.describe_topics([topic])
        partitions = sorted(p["partition"] for p in described["partitions"])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=request_timeout_ms, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return TopicView(len(partitions), {tp.partition: offset for tp, offset in ends.items()})


def check_holds(topic: str, view: TopicView, partitions: int, expected: Mapping[int, int]) -> None:
    """Raise `BrokerDataLost` unless the broker holds the topic, with `partitions`, up to `expected`.

    `expected` maps a partition to the end offset the relay had acknowledged there (records
    below it must be on the broker). An empty `expected` means nothing was acknowledged yet.
    """
    if view.partitions is None:
        if expected:
            raise BrokerDataLost(
                "topic_missing",
                f"topic {topic!r} is gone from the broker, which had acknowledged"
                f" {sum(expected.values())} records on it",
                topic=topic,
            )
        return
    if view.partitions != partitions:
        raise BrokerDataLost(
            "partitions_changed",
            f"topic {topic!r} has {view.partitions} partitions, the settings say {partitions}: it was"
            " re-created, or changed; an order's events would change partition",
            topic=topic,
            actual=view.partitions,
            configured=partitions,
        )
    behind = {p: (view.ends.get(p, 0), end) for p, end in expected.items() if view.ends.get(p, 0) < end}
    if behind:
        raise BrokerDataLost(
            "offsets_regressed",
            f"topic {topic!r} ends below what the broker had acknowledged (partition: (now, acknowledged))"
            f" {dict(sorted(behind.items()))}",
            topic=topic,
            partitions=sorted(behind),
        )


async def wait_for_topic(
    bootstrap_servers: str,
    topic: str,
    request_timeout_ms: int,
    *,
    stop: asyncio.Event | None = None,
    poll_s: float = 1.0,
    on_wait: Callable[[str], None] | None = None,
) -> bool:
    """Wait until the broker has `topic` (True), or until `stop` is set (False); never creates it.

    For consumers: they subscribe only to a topic its producer created with the right partition
    count. `on_wait` is called once with the reason when the topic is not there yet (a log line).
    """
    told = False
    while stop is None or not stop.is_set():
        try:
            view = await broker_view(bootstrap_servers, topic, request_timeout_ms)
            reason = "" if view.partitions is not None else f"topic {topic!r} does not exist yet"
        except Exception as exc:  # any broker failure: wait and ask again
            reason = f"broker unreachable: {exc!r}"
        if not reason:
            return True
        if not told and on_wait is not None:
            on_wait(reason)
            told = True
        if stop is None:
            await asyncio.sleep(poll_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)
    return False

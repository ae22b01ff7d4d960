"""The `orders.events` topic's side: one pass over every partition, kept per order, not per event.

For each order with messages in the range it keeps the set of versions seen as a bitmap (an
integer: a few bytes for an order's handful of versions), the highest version seen, the first
version that came after a higher one (0 when none) and the number of re-sent duplicates. An
order's messages all sit on one partition (key = order id), so reading partition by partition
sees them in the order a consumer does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

_BITS, _MAX, _LATE, _DUPS = range(4)

#: Records asked for per fetch round, and bytes per fetch: what is held in memory at once.
_MAX_RECORDS = 5_000
_FETCH_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class OrderOnTopic:
    """What the topic holds of one order's versions in the range."""

    versions: int  # bitmap: bit v set when version v was seen
    highest: int
    late: int  # first version seen after a higher one, or 0
    duplicates: int

    def missing(self, first: int, last: int) -> list[tuple[int, int]]:
        """Runs `(from, to)` of the versions `first..last` that are not on the topic."""
        runs: list[tuple[int, int]] = []
        for v in range(first, last + 1):
            if not (self.versions >> v) & 1:
                if runs and runs[-1][1] == v - 1:
                    runs[-1] = (runs[-1][0], v)
                else:
                    runs.append((v, v))
        return runs


@dataclass
class TopicScan:
    """Per-order figures of one topic's messages whose log position lies in the range."""

    topic: str
    orders: dict[str, list[int]] = field(default_factory=dict)
    messages: int = 0
    in_range: int = 0
    unreadable: int = 0

    def add(self, order_id: str, version: int) -> None:
        bit = 1 << version
        state = self.orders.get(order_id)
        if state is None:
            self.orders[order_id] = [bit, version, 0, 0]
        elif state[_BITS] & bit:
            state[_DUPS] += 1  # a re-publication (at-least-once)
        else:
            if version < state[_MAX] and not state[_LATE]:
                state[_LATE] = version
            state[_BITS] |= bit
            state[_MAX] = max(state[_MAX], version)

    def take(self, value: bytes | None, lo: int, hi: int) -> None:
        """Count one message: an envelope whose position lies in `lo..hi` adds its order's version."""
        try:
            envelope = orjson.loads(value or b"")
            position = envelope["position"]
            version = envelope["version"]
            order_id = envelope["order_id"]
            if not (isinstance(position, int) and isinstance(version, int) and isinstance(order_id, str)):
                raise TypeError("position, version or order_id of the wrong type")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1
            return
        if lo <= position <= hi:
            self.in_range += 1
            self.add(order_id, version)

    def order(self, order_id: str) -> OrderOnTopic | None:
        state = self.orders.get(order_id)
        return None if state is None else OrderOnTopic(*state)


async def scan_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    from_position: int,
    to_position: int,
    timeout_s: float = 600.0,
) -> TopicScan:
    """Read `topic` from its beginning to its end offsets as of the call.

    Messages outside `from_position..to_position` are counted and skipped; an unreadable one
    (not an envelope) is counted as such.
    """
    scan = TopicScan(topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=_FETCH_BYTES,
        fetch_max_bytes=_FETCH_BYTES,
    )
    try:
        await consumer.start()
        ids = await topic_partitions(consumer, topic)
        partitions = [TopicPartition(topic, p) for p in sorted(ids)]
        if not partitions:
            return scan
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = asyncio.get_running_loop().time() + timeout_s
        # One partition at a time keeps each order's messages in the order they were written.
        for tp in partitions:
            if ends[tp] == 0:
                continue
            consumer.pause(*[p for p in partitions if p != tp])
            consumer.resume(tp)
            while await consumer.position(tp) < ends[tp]:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(
                        f"{topic}[{tp.partition}] not read to offset {ends[tp]} in {timeout_s}s"
                    )
                batch = await consumer.getmany(tp, timeout_ms=500, max_records=_MAX_RECORDS)
                for record in batch.get(tp, ()):
                    scan.messages += 1
                    scan.take(record.value, from_position, to_position)
    finally:
        await consumer.stop()
    return scan


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str, *, attempts: int = 5) -> set[int]:
    """The topic's partition ids (empty when it does not exist), asked of the broker.

    `partitions_for_topic` knows only topics the client already asked about (Apache Kafka answers
    a metadata request for the topics it names), and `topics()` does not keep what it fetched.
    A busy broker can answer without the topic for a moment, so it is asked again before the
    topic is taken as missing (every event of the log would then be reported missing).
    """
    for attempt in range(attempts):
        cluster = await consumer._client.fetch_all_metadata()  # aiokafka has no public equivalent
        ids: set[int] = cluster.partitions_for_topic(topic) or set()
        if ids:
            return ids
        if attempt + 1 < attempts:
            await asyncio.sleep(0.2 * (attempt + 1))
    return set()

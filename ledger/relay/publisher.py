"""Kafka side of the relay: producer configuration, topic creation, and ordered batch produces.

Throughput: aiokafka's per-message `send()` is CPU-bound (~25k msg/s here), so records are
packed into one `BatchBuilder` per partition and sent with `send_batch()` (docs/architecture.md#relay).

Order: a key always maps to one partition (Kafka's murmur2 partitioner, the same as the Java
client, so consumers in any language agree). Within a partition at most one batch is in flight:
the next batch of the same partition is sent only after the previous one was acknowledged.
Without idempotence, several in-flight batches could be reordered by a retry (batch 1 fails,
batch 2 lands, batch 1 is retried after it); awaiting each batch rules that out. Partitions are
independent, so they are sent concurrently. The relay awaits the whole publish before it reads
the next slice of the log, so across relay batches order holds too. A failed publish is retried
whole: records that already landed are sent again (at-least-once), byte-identical, and the first
occurrence of each event still comes in log order.

Exactly-once (`exactly_once=True`, see `ledger.relay.eos`): the producer is transactional, with
the relay's stable `transactional.id`; a publish is one transaction holding its records and the
relay's checkpoint record, committed only once every record was acknowledged. A failed publish
is never retried as is (its commit may have landed): the relay re-reads its checkpoint first.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from ledger.relay.eos import (
    ExactlyOnceUnsupported,
    KafkaCheckpoint,
    checkpoints_topic,
    ensure_checkpoints_topic,
    transactional_id,
)
from ledger.relay.message import OutMessage
from ledger.relay.topics import BrokerDataLost, broker_view, check_holds, forbid_topic_auto_creation
from ledger_kernel.observability import get_logger
from ledger_kernel.settings import KafkaSettings

_log = get_logger(__name__)
#: Room for the produce request's framing around a full record batch.
_REQUEST_OVERHEAD = 64 * 1024
_PARTITION_CACHE = 200_000


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of `data` (as `org.apache.kafka.common.utils.Utils.murmur2`, unsigned).

    The same value as aiokafka's `murmur2`, about 4x faster: whole 4-byte words are read at once
    with `struct` instead of byte by byte (a test compares both on random keys).
    """
    length = len(data)
    h = 0x9747B28C ^ length
    words = length // 4
    for word in struct.unpack_from(f"<{words}I", data):
        k = (word * _M) & _MASK
        h = ((h * _M) & _MASK) ^ (((k ^ (k >> 24)) * _M) & _MASK)
    tail = data[words * 4 :]
    if tail:
        for i in range(len(tail) - 1, -1, -1):
            h ^= tail[i] << (8 * i)
        h = (h * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key: bytes, partitions: int) -> int:
    """The partition index of `key` among `partitions`, as Kafka's default partitioner picks it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class RelayConfigError(ValueError):
    """Settings the relay refuses to run with (would weaken its delivery guarantee)."""


def producer_options(
    kafka: KafkaSettings,
    bootstrap_servers: str,
    client_id: str = "ledger-relay",
    *,
    transactional_id: str | None = None,
) -> dict[str, Any]:
    """AIOKafkaProducer keyword arguments of the relay (docs/reliability.md#f9: a test asserts them).

    `acks=all` is required: with fewer acks a broker failover can lose an acknowledged record
    after the checkpoint moved past it. Idempotence follows the settings (real Kafka supports it;
    the Tansu test broker does not); a `transactional_id` (exactly-once relay) implies it.
    """
    if str(kafka.acks).lower() not in {"all", "-1"}:
        raise RelayConfigError(f"the relay needs acks=all, settings say acks={kafka.acks!r}")
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": kafka.enable_idempotence or transactional_id is not None,
        "max_batch_size": kafka.max_batch_size,
        "max_request_size": kafka.max_batch_size + _REQUEST_OVERHEAD,
        "request_timeout_ms": kafka.request_timeout_ms,
        "linger_ms": 0,
    }
    if transactional_id is not None:
        options["transactional_id"] = transactional_id
    return options


async def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    request_timeout_ms: int,
    *,
    check_partitions: bool = True,
) -> None:
    """Create the topic if missing, with explicit partitions (never rely on auto-create).

    Replication factor is min(3, brokers): 3 on a real cluster, 1 on a single dev broker. An
    existing topic with another partition count is refused (`TopicPartitionsChanged`) unless
    `check_partitions` is off (a consumer only needs the topic to exist).
    """
    forbid_topic_auto_creation()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        existing = await admin.list_topics()
        if topic in existing:
            if check_partitions:
                await _check_partitions(admin, topic, partitions)
            await _warn_if_not_durable(admin, topic)
            return
        brokers = 1
        with contextlib.suppress(Exception):  # describe_cluster is optional for the broker
            brokers = max(1, len((await admin.describe_cluster())["brokers"]))
        replication = min(3, brokers)
        try:
            await admin.create_topics(
                [NewTopic(topic, num_partitions=partitions, replication_factor=replication)]
            )
            _log.info(
                "relay.topic_created", topic=topic, partitions=partitions, replication_factor=replication
            )
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


class TopicPartitionsChanged(RelayConfigError):
    """The topic's partition count is not the configured one: keys would map to other partitions."""


async def _check_partitions(admin: AIOKafkaAdminClient, topic: str, configured: int) -> None:
    """Refuse to publish when the topic's partitions differ from the settings.

    A key's partition is `murmur2(key) % partitions`: with another count, an order's next events
    go to another partition than its earlier ones, and a consumer may see them first. Raised
    from `start`, the relay holds (logging it as a broker error) until an operator has drained
    the consumers and set `LEDGER_KAFKA__PARTITIONS` to the topic's count.
    """
    try:
        [described] = await admin.describe_topics([topic])
        actual = len(described["partitions"])
    except Exception:  # best effort: not every broker answers describe
        return
    if actual and actual != configured:
        raise TopicPartitionsChanged(
            f"topic {topic!r} has {actual} partitions, the settings say {configured}: an order's events"
            " would change partition and could be consumed out of order. Drain the consumers, then set"
            f" LEDGER_KAFKA__PARTITIONS={actual} (or restore the topic's partition count)"
        )


async def _warn_if_not_durable(admin: AIOKafkaAdminClient, topic: str) -> None:
    """docs/reliability.md#f9: say so loudly when the topic cannot survive a broker loss (fine in dev)."""
    with contextlib.suppress(Exception):  # best effort: not every broker answers describe
        [described] = await admin.describe_topics([topic])
        replicas = min(len(p["replicas"]) for p in described["partitions"])
        if replicas < 3:
            _log.warning("relay.topic_not_durable", topic=topic, replication_factor=replicas, wanted=3)


class KafkaPublisher:
    """One producer session; `publish` returns only when every record was acknowledged.

    It also keeps the end offset the broker acknowledged on each partition (`acked`) and stops
    with `BrokerDataLost` when the broker shows it lost records (see `ledger.relay.topics`):
    at `start`, when an acknowledgement lands below an earlier one (the partition was emptied:
    Tansu acknowledges a produce to a topic it lost at offset 0), and before the first publish
    after any broker connection closed (a restarted broker is asked what it holds before it is
    given anything, so a lost topic does not get newer records ahead of the re-published ones).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        bootstrap_servers: str,
        topic: str,
        *,
        exactly_once: bool = False,
        checkpoint_key: str | None = None,
    ) -> None:
        self._kafka = kafka
        self._bootstrap = bootstrap_servers
        self.topic = topic
        self.exactly_once = exactly_once
        #: Exactly-once: the checkpoints topic and the relay's key in it.
        self.checkpoints_topic = checkpoints_topic(kafka, topic)
        self._checkpoint_key = (checkpoint_key or f"relay:{topic}").encode()
        self._options = producer_options(
            kafka,
            bootstrap_servers,
            transactional_id=transactional_id(kafka, topic) if exactly_once else None,
        )
        self._producer: AIOKafkaProducer | None = None
        # murmur2 is pure Python (a few us a key): remember each key's partition.
        self._partition_of: dict[bytes, int] = {}
        self._partition_count = 0
        #: Partition -> least end offset the broker must report there (last acknowledged batch's
        #: base offset + 1, see `_acknowledged`).
        self.acked: dict[int, int] = {}
        self._suspect = False

    @property
    def transactional(self) -> bool:
        return self.exactly_once

    async def start(self, expected: Mapping[int, int] | None = None, *, may_create: bool = True) -> None:
        """Connect once the broker holds the topic up to `expected` (saved acknowledged ends).

        The topic is created (configured partitions) only when it is missing, nothing was
        acknowledged on it (`expected` empty) and `may_create`; otherwise a missing topic, another
        partition count or ends below `expected` raise `BrokerDataLost`.
        """
        forbid_topic_auto_creation()
        self.acked = dict(expected or {})
        view = await broker_view(self._bootstrap, self.topic, self._kafka.request_timeout_ms)
        if view.partitions is None and not self.acked and may_create:
            await ensure_topic(
                self._bootstrap, self.topic, self._kafka.partitions, self._kafka.request_timeout_ms
            )
        else:
            check_holds(self.topic, view, self._kafka.partitions, self.acked)
            if view.partitions is None:
                raise BrokerDataLost(
                    "topic_missing", f"topic {self.topic!r} does not exist", topic=self.topic
                )
        if self.exactly_once:
            await ensure_checkpoints_topic(
                self._bootstrap, self.checkpoints_topic, self._kafka.request_timeout_ms
            )
        producer: AIOKafkaProducer = AIOKafkaProducer(**self._options)
        # Every connection of this producer reports its close here (aiokafka passes the client's
        # callback to each connection it opens): the next publish asks the broker first.
        client: Any = producer.client
        on_closed = client._on_connection_closed

        def closed(conn: Any, reason: Any) -> None:
            self._suspect = True
            on_closed(conn, reason)

        client._on_connection_closed = closed
        try:
            # Transactional: `start` registers the transactional id (InitProducerId), which fences
            # every earlier producer with it and aborts what it left open.
            await producer.start()
            await asyncio.wait_for(producer.partitions_for(self.topic), self._kafka.request_timeout_ms / 1000)
        except KafkaError as exc:
            await _stop_quietly(producer, 1.0)
            if self.exactly_once and not exc.retriable and not isinstance(exc, KafkaConnectionError):
                raise ExactlyOnceUnsupported(
                    f"the broker at {self._bootstrap} refused a transactional producer"
                    f" ({type(exc).__name__}: {exc}); exactly-once publication needs a broker with"
                    " transactions (Apache Kafka; Tansu has none). Run the relay without"
                    " --exactly-once (LEDGER_RELAY__EXACTLY_ONCE=false) for at-least-once"
                ) from exc
            raise
        except BaseException:
            await _stop_quietly(producer, 1.0)
            raise
        self._producer = producer
        self._suspect = False

    async def verify(self) -> None:
        """Raise `BrokerDataLost` unless the broker holds the topic up to `acked` (one admin round trip)."""
        view = await broker_view(self._bootstrap, self.topic, self._kafka.request_timeout_ms)
        check_holds(self.topic, view, self._kafka.partitions, self.acked)
        if view.partitions is None:
            raise BrokerDataLost("topic_missing", f"topic {self.topic!r} does not exist", topic=self.topic)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop the producer; never hangs on a broker that went away."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer, timeout_s)

    async def publish(self, messages: Sequence[OutMessage]) -> dict[int, int]:
        """Send `messages` (log order) and wait for every acknowledgement; raises on any failure.

        Returns the acknowledged end offset of each partition the records went to (to be saved
        with the checkpoint).
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("publisher is not started")
        if not messages:
            return {}
        partitions = sorted(producer.client.cluster.partitions_for_topic(self.topic) or ())
        if self._suspect or len(partitions) != self._kafka.partitions:
            # A connection closed (the broker may be a new, empty one), or the metadata shows
            # the topic gone or changed: ask the broker before giving it anything.
            await self.verify()
            self._suspect = False
            partitions = sorted(await producer.partitions_for(self.topic))
            if len(partitions) != self._kafka.partitions:
                raise RuntimeError(f"stale metadata for {self.topic!r}: {len(partitions)} partitions")
        if self.exactly_once:
            # No abort on failure: the relay drops this producer, and the next one's start
            # aborts the open transaction (an abort would wait on a broker that may be gone).
            # The checkpoint record goes out with the records (same produce requests, one round
            # trip less than after them): the transaction makes them visible together or not at
            # all. Its offsets are those acknowledged before this publish (a lower bound).
            await producer.begin_transaction()
            checkpoint = KafkaCheckpoint(messages[-1].checkpoint, dict(self.acked))
            sent = await producer.send(
                self.checkpoints_topic, checkpoint.encode(), key=self._checkpoint_key, partition=0
            )
            try:
                ends = await self._send_all(producer, messages, partitions)
            except BaseException:
                sent.add_done_callback(_retrieve)  # its outcome goes with the transaction's
                raise
            await self._commit(producer, sent)
            return ends
        return await self._send_all(producer, messages, partitions)

    async def _commit(self, producer: AIOKafkaProducer, checkpoint_sent: asyncio.Future[Any]) -> None:
        """Commit the open transaction once its checkpoint record was acknowledged (the records were)."""
        await checkpoint_sent
        await producer.commit_transaction()

    async def _send_all(
        self, producer: AIOKafkaProducer, messages: Sequence[OutMessage], partitions: list[int]
    ) -> dict[int, int]:
        if len(partitions) != self._partition_count or len(self._partition_of) > _PARTITION_CACHE:
            self._partition_of.clear()
            self._partition_count = len(partitions)
        by_partition: dict[int, list[OutMessage]] = defaultdict(list)
        cache = self._partition_of
        count = len(partitions)
        for message in messages:
            key = message.key
            partition = cache.get(key)
            if partition is None:
                partition = cache[key] = partitions[partition_of(key, count)]
            by_partition[partition].append(message)
        results = await asyncio.gather(
            *(self._send_partition(producer, p, part) for p, part in by_partition.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BrokerDataLost):
                raise result
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return {p: self.acked[p] for p in by_partition}

    async def _send_partition(
        self, producer: AIOKafkaProducer, partition: int, messages: list[OutMessage]
    ) -> None:
        """Record batches of one partition, each acknowledged before the next is sent."""
        builder = producer.create_batch()
        for message in messages:
            appended = builder.append(
                key=message.key, value=message.value, timestamp=message.timestamp_ms, headers=message.headers
            )
            if appended is None:  # full: send it, then start the next batch with this record
                builder.close()
                await self._acknowledged(producer, builder, partition)
                builder = producer.create_batch()
                builder.append(
                    key=message.key,
                    value=message.value,
                    timestamp=message.timestamp_ms,
                    headers=message.headers,
                )
        if builder.record_count():
            builder.close()
            await self._acknowledged(producer, builder, partition)

    async def _acknowledged(self, producer: AIOKafkaProducer, builder: Any, partition: int) -> None:
        """Send one record batch, wait for its acknowledgement and check where it landed.

        An acknowledged base offset below what was acknowledged before means the partition lost
        records (emptied, re-created): `BrokerDataLost`, and `acked` keeps the old value, so
        nothing the broker no longer holds is ever reported as held. What is kept is the batch's
        base offset + 1, the least end offset any broker holding the batch reports: Tansu
        reports a partition's end as its last batch's base offset + 1, not past its records.
        """
        metadata = await (await producer.send_batch(builder, self.topic, partition=partition))
        before = self.acked.get(partition, 0)
        if metadata.offset < before:
            raise BrokerDataLost(
                "offsets_regressed",
                f"the broker acknowledged records at offset {metadata.offset} of {self.topic!r}"
                f" partition {partition}, below the {before} it had acknowledged before",
                topic=self.topic,
                partitions=[partition],
            )
        self.acked[partition] = metadata.offset + 1


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (an outcome already reported another way)."""
    if not future.cancelled():
        future.exception()


async def _stop_quietly(producer: AIOKafkaProducer, timeout_s: float) -> None:
    with contextlib.suppress(Exception, asyncio.TimeoutError):
        await asyncio.wait_for(producer.stop(), timeout_s)
    # A transactional producer that failed (fenced, broker gone) keeps the error in its
    # transaction's future too; the publish already raised it, so it is not news.
    txn: Any = getattr(producer, "_txn_manager", None)
    accumulator: Any = getattr(producer, "_message_accumulator", None)
    waiters = [txn.wait_for_transaction_end()] if txn is not None else []
    if accumulator is not None:
        for batch in [*accumulator._pending_batches, *(b for q in accumulator._batches.values() for b in q)]:
            waiters += [batch.future, batch._drain_waiter]
    for waiter in waiters:
        if waiter is not None and waiter.done() and not waiter.cancelled():
            waiter.exception()

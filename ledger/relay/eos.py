"""Exactly-once publication: the relay's checkpoint committed in Kafka with its records.

Why: at-least-once saves the checkpoint in PostgreSQL after the broker acknowledged a batch,
so a crash between the two re-publishes the batch (consumers dedupe by event id). In
exactly-once mode (`RelaySettings.exactly_once`, `ledger relay --exactly-once`) each publish is
one Kafka transaction holding the records **and** a checkpoint record (docs/architecture.md#relay):

- the checkpoint record goes to a compacted topic (`KafkaSettings.checkpoints_topic`, default
  `<events topic>.checkpoints`), keyed by the relay's name (`relay:<topic>`); its value is the
  log position of the batch's last event `(tx, position)` (the xid8 fence pair the relay
  resumes after, docs/CONTRACTS.md) and the end offsets the broker had acknowledged per partition
  before that publish (a lower bound of what the broker owes, as `relay_offsets` in PostgreSQL);
- the producer's `transactional.id` is stable per topic (`transactional_id`), so a relay that
  starts fences every earlier producer of that topic: a zombie's open transaction is aborted
  and its next commit refused (`ProducerFenced`);
- on start, after its producer fenced the others, the relay reads the last committed
  checkpoint with `read_committed` (`read_checkpoint`) and resumes after it. A crash anywhere
  leaves either a committed transaction (records and checkpoint) or an aborted one (neither);
  a `read_committed` consumer sees every event once.

PostgreSQL's checkpoint is saved after the commit, for monitoring (`ledger_relay_lag_*`, `ledger
relay republish`): it is never ahead of Kafka's and may lag it by one batch after a crash.

A broker without transactions (Tansu) refuses the transactional producer at start-up:
`ExactlyOnceUnsupported`, a configuration error (the CLI exits 78), never a silent downgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ledger.relay.topics import forbid_topic_auto_creation
from ledger.store.records import Checkpoint
from ledger_kernel.observability import get_logger
from ledger_kernel.settings import KafkaSettings

_log = get_logger(__name__)

#: Records read per step while looking back for the last checkpoint of a relay (the topic is
#: compacted, but its active segment keeps every checkpoint of the last `segment.ms`).
_LOOKBACK = 512
#: The checkpoints topic: one partition (a handful of keys, one record per publish), compacted.
CHECKPOINT_TOPIC_CONFIG: Mapping[str, str] = {
    "cleanup.policy": "compact",
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
}


class ExactlyOnceUnsupported(Exception):
    """The broker refused a transactional producer: exactly-once publication cannot run on it."""


def transactional_id(kafka: KafkaSettings, topic: str) -> str:
    """The relay's stable `transactional.id` for `topic` (the setting, else `ledger-relay:<topic>`)."""
    return kafka.transactional_id or f"ledger-relay:{topic}"


def checkpoints_topic(kafka: KafkaSettings, topic: str) -> str:
    """The topic an exactly-once relay of `topic` commits its checkpoints to."""
    return kafka.checkpoints_topic or f"{topic}.checkpoints"


@dataclass(frozen=True)
class KafkaCheckpoint:
    """What one committed transaction says: the last event published and the broker's ends."""

    checkpoint: Checkpoint
    offsets: dict[int, int] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "tx": self.checkpoint.tx,
                "position": self.checkpoint.position,
                "offsets": {str(p): o for p, o in sorted(self.offsets.items())},
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> KafkaCheckpoint:
        doc = orjson.loads(value)
        offsets = {int(p): int(o) for p, o in (doc.get("offsets") or {}).items()}
        return cls(Checkpoint(int(doc["tx"]), int(doc["position"])), offsets)


async def ensure_checkpoints_topic(bootstrap_servers: str, topic: str, request_timeout_ms: int) -> None:
    """Create the compacted checkpoints topic if missing (one partition, replication min(3, brokers))."""
    forbid_topic_auto_creation()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=request_timeout_ms)
    await admin.start()
    try:
        if topic in await admin.list_topics():
            return
        brokers = 1
        with contextlib.suppress(Exception):  # describe_cluster is optional for the broker
            brokers = max(1, len((await admin.describe_cluster())["brokers"]))
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=1,
                        replication_factor=min(3, brokers),
                        topic_configs=dict(CHECKPOINT_TOPIC_CONFIG),
                    )
                ]
            )
            _log.info("relay.checkpoints_topic_created", topic=topic)
    finally:
        await admin.close()


async def read_checkpoint(
    bootstrap_servers: str, topic: str, name: str, request_timeout_ms: int
) -> KafkaCheckpoint | None:
    """The last committed checkpoint of relay `name` in `topic` (None: none yet, or no topic).

    Read with `read_committed`, up to the last stable offset: a transaction still open (a zombie
    that was not fenced yet) or aborted is never taken. Reads back from the end a window at a
    time, so a long active segment costs one window, not the whole segment.
    """
    forbid_topic_auto_creation()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=request_timeout_ms,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():  # a metadata request for every topic
            return None
        # The publisher writes every checkpoint to partition 0 (the topic is created with one).
        window_s = 3 * request_timeout_ms / 1000
        return await _last_for_key(consumer, TopicPartition(topic, 0), name.encode(), window_s)
    finally:
        await consumer.stop()


async def _last_for_key(
    consumer: AIOKafkaConsumer, tp: TopicPartition, key: bytes, window_s: float
) -> KafkaCheckpoint | None:
    """The last record of `key` below the partition's last stable offset; `TimeoutError` when
    reading one window takes longer than `window_s` (the broker stopped answering)."""
    loop = asyncio.get_running_loop()
    consumer.assign([tp])
    begin = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    while end > begin:
        start = max(begin, end - _LOOKBACK)
        consumer.seek(tp, start)
        deadline = loop.time() + window_s
        found: bytes | None = None
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {tp.topic} up to offset {end} took too long")
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=_LOOKBACK)
            for record in batch.get(tp, ()):
                if record.offset < end and record.key == key and record.value is not None:
                    found = record.value
        if found is not None:
            return KafkaCheckpoint.decode(found)
        end = start
    return None

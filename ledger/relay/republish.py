"""`ledger relay republish`: put a range of the log on the events topic again.

Why: the log is the source of truth, so Kafka can always be rebuilt from it. After a broker lost
the topic (a restarted in-memory broker, a topic deleted and re-created), the relay holds (see
`ledger.relay.relay`); this command creates the topic if it is missing (configured partitions;
another count is refused), re-publishes every event from a position or a time up to the relay's
checkpoint, in log order and byte-identical to what the relay published (same envelope, same
event-carried order state, folded from the store), then saves the end offsets the broker holds
as the relay's acknowledged offsets, which releases the relay's hold: it goes on from its
checkpoint, after the re-published range, so every order's events keep their order.

Consumers dedupe by event id (the fan-out's inbox), so re-publishing what they already have
costs them a read, not an effect. Events after the relay's checkpoint are left to the relay.
Run it while the relay holds (or is stopped): re-publishing behind a relay that is publishing
only adds duplicates. For an exactly-once relay (`RelaySettings.exactly_once`) the relay's
checkpoint is the later of PostgreSQL's and the one committed in Kafka (PostgreSQL's may lag it
by a publish), so the range re-published reaches where that relay resumes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from ledger.relay.eos import checkpoints_topic, read_checkpoint
from ledger.relay.foldcache import DomainAdapter, OrderStates
from ledger.relay.message import LogEvent, OutMessage, build_message
from ledger.relay.offsets import replace_offsets
from ledger.relay.publisher import KafkaPublisher, TopicPartitionsChanged, ensure_topic
from ledger.relay.relay import checkpoint_name
from ledger.relay.topics import broker_view
from ledger.store import create_pool
from ledger.store.reads import read_log
from ledger.store.records import START, Checkpoint
from ledger.store.store import load_checkpoint
from ledger_kernel.observability import get_logger
from ledger_kernel.settings import Settings

_log = get_logger(__name__)


async def _relay_checkpoint(settings: Settings, pool: asyncpg.Pool, topic: str) -> Checkpoint | None:
    """Where the relay of `topic` goes on from (see the module docstring)."""
    name = checkpoint_name(topic)
    saved = await load_checkpoint(pool, name)
    if not settings.relay.exactly_once:
        return saved
    committed = await read_checkpoint(
        settings.bootstrap_servers,
        checkpoints_topic(settings.kafka, topic),
        name,
        settings.kafka.request_timeout_ms,
    )
    if committed is None:
        return saved
    return committed.checkpoint if saved is None else max(saved, committed.checkpoint)


@dataclass
class RepublishResult:
    """What a re-publish did: events sent, the range, and the broker's end offsets afterwards."""

    events: int = 0
    scanned: int = 0
    upto: Checkpoint | None = None
    ends: dict[int, int] = field(default_factory=dict)


async def republish(
    settings: Settings,
    *,
    from_position: int | None = None,
    from_time: datetime | None = None,
    topic: str | None = None,
    pool: asyncpg.Pool | None = None,
    progress: Callable[[int], None] | None = None,
) -> RepublishResult:
    """Re-publish the events with `position >= from_position` and `recorded_at >= from_time`
    (either or both; neither: the whole log) up to the relay's checkpoint, in log order."""
    topic = topic or settings.kafka.events_topic
    own_pool = pool is None
    if pool is None:
        pool = await create_pool(
            settings.database_url, settings.store, application_name="ledger-republish", min_size=1, max_size=2
        )
    try:
        return await _republish(
            settings, pool, topic, from_position=from_position, from_time=from_time, progress=progress
        )
    finally:
        if own_pool:
            await pool.close()


async def _republish(
    settings: Settings,
    pool: asyncpg.Pool,
    topic: str,
    *,
    from_position: int | None,
    from_time: datetime | None,
    progress: Callable[[int], None] | None,
) -> RepublishResult:
    kafka = settings.kafka
    name = checkpoint_name(topic)
    result = RepublishResult(upto=await _relay_checkpoint(settings, pool, topic))
    # Created if missing (this is the explicit, operator-asked creation); another partition
    # count is refused by `ensure_topic` (TopicPartitionsChanged).
    await ensure_topic(settings.bootstrap_servers, topic, kafka.partitions, kafka.request_timeout_ms)
    publisher = KafkaPublisher(kafka, settings.bootstrap_servers, topic)
    await publisher.start(may_create=False)
    try:
        if result.upto is not None:
            await _send_range(
                settings,
                pool,
                publisher,
                result,
                from_position=from_position,
                from_time=from_time,
                progress=progress,
            )
    finally:
        await publisher.close()
    view = await broker_view(settings.bootstrap_servers, topic, kafka.request_timeout_ms)
    if view.partitions != kafka.partitions:
        raise TopicPartitionsChanged(
            f"topic {topic!r} changed while re-publishing: {view.partitions} partitions"
        )
    result.ends = view.ends
    async with pool.acquire() as conn:
        await replace_offsets(conn, name, view.ends)
    _log.info(
        "relay.republished",
        topic=topic,
        events=result.events,
        scanned=result.scanned,
        from_position=from_position,
        from_time=from_time.isoformat() if from_time else None,
        upto_position=result.upto.position if result.upto else None,
        ends=view.ends,
    )
    return result


async def _send_range(
    settings: Settings,
    pool: asyncpg.Pool,
    publisher: KafkaPublisher,
    result: RepublishResult,
    *,
    from_position: int | None,
    from_time: datetime | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Page through the log from its start to the relay's checkpoint, sending the wanted events.

    The log is read whole, in `(tx, position)` order: positions are not in log order (they are
    taken at insert, visible at commit), so a range of positions cannot be sought. The order
    state cache sees every event of an order it folds, so views are built as the relay built them.
    """
    assert result.upto is not None
    domain = DomainAdapter()
    states = OrderStates(pool, domain)
    after: Checkpoint = START
    batch_size = settings.relay.batch_size
    while True:
        rows = await read_log(pool, after, batch_size)
        events = [LogEvent(*row) for row in rows if (row["tx"], row["position"]) <= tuple(result.upto)]
        if not events:
            return
        after = Checkpoint(events[-1].tx, events[-1].position)
        await states.prepare(events)
        messages: list[OutMessage] = []
        for event in events:
            view = states.advance(event)
            if (from_position is None or event.position >= from_position) and (
                from_time is None or event.recorded_at >= from_time
            ):
                messages.append(build_message(event, view, upcast=domain.upcast))
        result.scanned += len(events)
        if messages:
            await publisher.publish(messages)
            result.events += len(messages)
            if progress is not None:
                progress(result.events)
        if len(events) < len(rows) or len(rows) < batch_size:
            return
        await asyncio.sleep(0)

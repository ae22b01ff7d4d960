"""The relay: the fenced global log, from its checkpoint, onto `orders.events`, in log order.

Loop: take the next batch of the fenced log (the store's `subscribe`, woken by NOTIFY and
polling), build the records (event-carried order state from `OrderStates`), publish them
until the broker acknowledged all of them, then save the checkpoint `(tx, position)` of the
batch's last event in the `checkpoints` table (`relay:<topic>`). Nothing is checkpointed before
the acknowledgement, so a crash anywhere re-publishes at most the batches that were in flight
(at-least-once, never a skip); the fence means the relay never passes an open transaction.

Broker trouble: the producer is dropped and rebuilt after a capped exponential back-off with
jitter, so a missing broker costs a reconnect attempt now and then, not a hot loop (no
aiokafka background tasks are left spinning while the broker is away). The batch that failed
is kept and re-sent as is (same bytes). Database trouble backs off the same way and resumes
from the last saved checkpoint.

Throughput: reading and encoding the next batch overlaps with publishing the current one,
records go out as per-partition record batches (see `publisher`), and the checkpoint costs one
round trip without an fsync wait. Per-event CPU is mostly decoding and folding the event, the
order view (memoized per order: only the parts an event changed are re-serialized, see
`orderview`) and the JSON envelope (bench/relay.py prints the figures). The log is read with
`data` and `metadata` as JSON text (`LogEvent`): no jsonb codec call, and the fold validates
the text in Rust; each envelope is built right after its order view. In a relay process
(`tune_gc`), what a published batch leaves alive is frozen for the garbage collector
(`BatchGc`): young collections used to walk the cache's new orders and the batches waiting to
be published again and again.

Caught up at a steady rate, the relay would publish every few milliseconds, one small record
batch per partition touched; `RelaySettings.publish_interval_ms` spaces publishes out (see
`_gather`): fewer, larger batches for the broker, for a little latency.

Broker data loss (a topic lost in a broker restart, deleted and re-created, or truncated): the
publisher checks what the broker holds against the end offsets it acknowledged, saved with the
checkpoint in `relay_offsets` (see `ledger.relay.topics`). On `BrokerDataLost` the relay stops
publishing and holds: one `relay.broker_lost_data` error line, `ledger_relay_broker_data_lost`
at 1 for the reason, `/readyz` not ready with the reason. The batch in flight is not
checkpointed, so the checkpoint never passes records the broker does not hold. It resumes by
itself once the broker holds the topic again up to the saved offsets: after `ledger relay
republish`, which re-publishes the log and saves what the broker then holds.

Exactly-once (`RelaySettings.exactly_once`, see `ledger.relay.eos`): each publish is one Kafka
transaction with the records and the relay's checkpoint record; the relay resumes from the
checkpoint committed in Kafka (read after its producer fenced any other), and PostgreSQL's
checkpoint is saved after the commit (never ahead of Kafka's). A failed publish is not sent again
as is (its commit may have landed before the connection broke): the relay reconnects, re-reads
its checkpoint and goes on from there (`_Resync`). A fenced producer (another relay of the topic
started) steps down like a lost lock (`LeadershipLost`).

Stop (SIGTERM): the batch in flight is finished (acknowledged and checkpointed, or given up
after its current attempt) and the relay returns; back-off sleeps end at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from aiokafka.errors import ProducerFenced

from ledger.relay.eos import ExactlyOnceUnsupported, read_checkpoint
from ledger.relay.foldcache import DomainAdapter, OrderStates
from ledger.relay.message import LogEvent, OutMessage, build_message
from ledger.relay.offsets import load_offsets, save_checkpoint_and_offsets
from ledger.relay.publisher import KafkaPublisher
from ledger.relay.topics import BrokerDataLost
from ledger.store import EventRegistry, EventStore, check_xid_horizon, create_pool
from ledger.store.records import START, Checkpoint, Connection, RecordedEvent
from ledger.store.store import load_checkpoint
from ledger_kernel.observability import METRICS, Metrics, Readiness, get_logger
from ledger_kernel.settings import Settings

_log = get_logger(__name__)

_LAG_SQL = """
SELECT count(*) AS n,
       coalesce(extract(epoch FROM clock_timestamp() - min(recorded_at)), 0)::float8 AS age
  FROM events WHERE (tx, position) > ($1::xid8, $2::bigint)
"""
_RNG = random.Random()
_PIPELINE_DEPTH = 2
#: An encoded batch: one record per event, in log order (the last one's checkpoint is the batch's).
#: Only the records wait in the queue: the events are let go once encoded, so the garbage
#: collector does not keep visiting a waiting batch's events (it showed in every collection).
_Encoded = list[OutMessage]
_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)


_MORE = object()  # `_drain`: the queue is empty but not finished
_LEADER_CHECK_TIMEOUT_S = 5.0  # a lock session that does not answer in time is taken as lost


class LeadershipLost(Exception):
    """The relay's advisory lock session is gone, or (exactly-once) its producer was fenced:
    another relay may be active now."""


class _Resync(Exception):
    """Exactly-once: a publish failed and may or may not have been committed; resume from the
    checkpoint committed in Kafka."""


#: `LogEvent._make` without its Python-level frame (~1.5% of the relay's CPU): a row of
#: `reads.LOG_COLUMNS` has exactly `LogEvent`'s fields.
_log_event = functools.partial(tuple.__new__, LogEvent)


def _drain(
    item: _Encoded | BaseException | None, queue: asyncio.Queue[_Encoded | BaseException | None]
) -> tuple[list[OutMessage], object]:
    """`item` and every batch already waiting behind it, as one publish.

    Batches are read and encoded ahead while the previous one is in flight; publishing them
    together costs one acknowledgement wait and one checkpoint instead of one each, so events
    do not queue behind publish round trips (latency) and round trips are fewer (throughput).
    Returns the records (one per event, log order) and what ended the drain: `_MORE`, None
    (stop) or the reader's exception, to be handled after the drained batches are published.
    """
    messages: list[OutMessage] = []
    while item is not None and not isinstance(item, BaseException):
        messages += item
        if queue.empty():
            return messages, _MORE
        item = queue.get_nowait()
    return messages, item


def _cancelling() -> bool:
    """True when the current task was asked to stop (its CancelledError may have been replaced)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _finish(step: asyncio.Future[Any]) -> None:
    """Cancel a pending `anext` of the log's generator and wait until it has unwound.

    Left running, it would keep the generator busy (its `aclose` then raises "already running",
    and its LISTEN connection stays out of the pool). Waits even when the caller is cancelled
    meanwhile: the generator must be idle before it is closed.
    """
    if step.done():
        if not step.cancelled():
            step.exception()  # retrieved: an error raised while cancelled is not news
        return
    step.cancel()
    await asyncio.wait({step})
    if not step.cancelled():
        step.exception()


def tune_gc() -> None:
    """Process-level GC settings for a relay process (call once, after imports).

    The relay allocates a few dozen short-lived objects per event (rows, views, envelopes) while
    holding a large, long-lived LRU of folded orders (~18 tracked objects each). With the default
    thresholds (700, 10, 10) full collections keep walking that LRU (measured: 2-3.5k ev/s encode
    rate with defaults, ~5-6k with GC out of the way). Full collections are therefore kept rare
    (one per ~100M net allocations, as before), after freezing the start-up objects.

    Every collection stops the relay, for a time proportional to the objects it walks. Without
    more, nearly all of them survive (new cached orders), so the young generations were kept
    small: measured with 1,000 ev/s in mind (bench/relay.py latency part, in-process encode of
    250k events), thresholds (50_000, 20) paused ~30-40 ms every ~10 s and 660 ms for the first
    generation-1 collection, straight into the end-to-end latency, and (5_000, 2) at most ~3 ms
    (gen 0) and ~11 ms (gen 1).

    It also turns on `BatchGc` for the relays of this process: what a published batch leaves
    alive is frozen, which empties the young generations after every batch. A young collection
    then only ever walks what one batch allocates, so generation 0 is sized to hold a batch
    (~10 tracked objects an event: a 2,000-event batch and the next one read ahead): in steady
    state no collection runs at all (measured: GC from ~5% of the relay's instructions to none
    in bench/relay.py's throughput part), and at 1,000 ev/s, a few events a batch, none either.
    One that does run (a batch above ~5,000 events) pauses ~10 ms.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 2, 10_000)
    BatchGc.enabled = True


async def _gather(
    messages: list[OutMessage],
    queue: asyncio.Queue[_Encoded | BaseException | None],
    until: float,
    limit: int,
) -> tuple[list[OutMessage], object]:
    """`messages` and what the reader queues until loop time `until` (up to `limit` records), as
    one publish. Returns as `_drain`.

    Why (`RelaySettings.publish_interval_ms`): caught up at a steady rate, the relay would publish
    every few milliseconds, one small record batch per partition touched, and the broker stores
    and serves every batch on its own. Starting publishes at most every few milliseconds makes
    fewer, larger batches; the wait is counted from the previous publish's start, so its round
    trip is part of it, and a relay that was idle publishes at once. Events that arrive meanwhile
    are read and encoded as they come, not after the wait.
    """
    loop = asyncio.get_running_loop()
    tail: object = _MORE
    while tail is _MORE and len(messages) < limit:
        remaining = until - loop.time()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):  # not wait_for: it can swallow a cancel on 3.11
                item = await queue.get()
        except TimeoutError:
            break
        more, tail = _drain(item, queue)
        messages += more
    return messages, tail


class BatchGc:
    """After each published batch, moves every live object out of the collector's reach (`gc.freeze`).

    Why: what survives a batch is nearly all long-lived (the cache's new orders, ~25 tracked
    objects each) or waiting to be published (records of batches encoded ahead); the young
    collections walked them again and again, generation 0 then 1 (measured in bench/relay.py's
    throughput part: GC at ~15-20% of the relay's CPU, and ~20-25% more events/s with the
    collector off). Freezing is O(1); afterwards a collection only walks what the next batch
    allocated, and at low rates (a few events per batch) no collection runs at all.

    Safe because the relay's steady state makes no reference cycles (measured: a whole relay run
    with the collector off left no unreachable object but the relay itself, once stopped):
    frozen objects are still freed by reference counting. As a bound for a cycle made on a rare
    path (an error's traceback), every `full_every` events the objects are unfrozen and a full
    collection runs (one pause, like the rare full collections of `tune_gc`'s thresholds), and
    everything is unfrozen when the relay stops. Only relay processes opt in (`tune_gc`).
    """

    enabled = False
    full_every = 10_000_000

    def __init__(self) -> None:
        self._since_full = 0

    def after_batch(self, events: int) -> None:
        """Call once a batch of `events` was acknowledged and checkpointed."""
        if not self.enabled:
            return
        self._since_full += events
        if self._since_full >= self.full_every:
            self._since_full = 0
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    def release(self) -> None:
        """Hand the frozen objects back to the collector (the relay stopped)."""
        if self.enabled:
            gc.unfreeze()


def checkpoint_name(topic: str) -> str:
    """Name of the relay's row in `checkpoints`."""
    return f"relay:{topic}"


@dataclass
class Backoff:
    """Capped exponential back-off with "equal jitter", reset on success.

    The delay is uniform in [ceiling/2, ceiling]: jitter spreads reconnect attempts of several
    relays or restarts, and the floor keeps a broker outage from ever turning into a tight loop.
    """

    initial_s: float
    max_s: float
    attempt: int = 0
    rng: random.Random | None = None

    def next_delay(self) -> float:
        ceiling: float = min(self.max_s, self.initial_s * 2.0 ** min(self.attempt, 30))
        self.attempt += 1
        return ceiling / 2 + (self.rng or _RNG).uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopped first; True when stopped."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


class Relay:
    """Publishes the fenced log on one topic; see the module docstring for the guarantees."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        stop: asyncio.Event,
        metrics: Metrics = METRICS,
        topic: str | None = None,
        states: OrderStates | None = None,
        publisher_factory: Callable[[], KafkaPublisher] | None = None,
        lag_interval_s: float = 1.0,
        still_leader: Callable[[], Awaitable[bool]] | None = None,
        readiness: Readiness | None = None,
        hold_poll_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self._still_leader = still_leader
        self.readiness = readiness if readiness is not None else Readiness()
        self._hold_poll_s = hold_poll_s
        self.pool = pool
        self.stop = stop
        self.metrics = metrics
        self.topic = topic or settings.kafka.events_topic
        self.name = checkpoint_name(self.topic)
        self.domain = DomainAdapter()
        self.states = states if states is not None else OrderStates(pool, self.domain)
        # A partial, not a lambda over `self`: no reference cycle, so a stopped relay and its
        # cache are freed by reference counting (see `BatchGc`).
        self.exactly_once = settings.relay.exactly_once
        self._publisher_factory = publisher_factory or functools.partial(
            KafkaPublisher,
            settings.kafka,
            settings.bootstrap_servers,
            self.topic,
            exactly_once=self.exactly_once,
            checkpoint_key=self.name,
        )
        self._publisher: KafkaPublisher | None = None
        self._store = EventStore(pool, EventRegistry(), settings.store)
        self._lag_interval_s = lag_interval_s
        relay = settings.relay
        self._broker_backoff = Backoff(relay.backoff_initial_s, relay.backoff_max_s)
        self._db_backoff = Backoff(relay.backoff_initial_s, relay.backoff_max_s)
        self.checkpoint: Checkpoint = START
        #: End offsets acknowledged per partition, as saved with the checkpoint (what the broker owes).
        self.saved_offsets: dict[int, int] = {}
        self._pending_offsets: dict[int, int] = {}
        self._gc = BatchGc()

    async def run(self) -> None:
        """Run until `stop` is set."""
        with contextlib.suppress(*_DB_ERRORS):  # for the lag gauges while connecting
            self.checkpoint = await load_checkpoint(self.pool, self.name) or START
        lag_task = asyncio.get_running_loop().create_task(self._lag_loop())
        try:
            while not self.stop.is_set():
                try:
                    # Connect (creating the topic the first time) before anything is read.
                    if self._publisher is None:
                        await self._load_saved()
                        if not await self._publish_until_acked([]):
                            return
                    await check_xid_horizon(self.pool)
                    self.checkpoint = await self._resume_point()
                    _log.info(
                        "relay.resuming",
                        topic=self.topic,
                        tx=self.checkpoint.tx,
                        position=self.checkpoint.position,
                        exactly_once=self.exactly_once,
                    )
                    await self._follow()
                except _Resync:
                    continue
                except BrokerDataLost as exc:
                    if await self._hold(exc):
                        break
                except _DB_ERRORS as exc:
                    _log.warning("relay.database_error", error=repr(exc))
                    if await sleep_or_stop(self.stop, self._db_backoff.next_delay()):
                        break
        finally:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
            if self._publisher is not None:
                await self._publisher.close()
                self._publisher = None
            self._gc.release()

    async def _follow(self) -> None:
        """Publish batch after batch from `self.checkpoint` until stopped.

        Reading and encoding the next batch overlaps with publishing the current one (a queue
        of `_PIPELINE_DEPTH`); publishing and checkpointing stay strictly one batch at a time,
        in log order. Encoding ahead only moves the order-state cache ahead: after a restart
        of this loop the cache misses and re-folds from the store, so it is never wrong.
        """
        queue: asyncio.Queue[_Encoded | BaseException | None] = asyncio.Queue(_PIPELINE_DEPTH)
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read_ahead(queue))
        batch_size = self.settings.relay.batch_size
        interval_s = self.settings.relay.publish_interval_ms / 1000
        next_publish = loop.time()  # earliest start of the next publish while caught up
        try:
            async with self.pool.acquire() as pooled:
                # One connection for checkpoints: one round trip per save. Losing a checkpoint
                # commit in a database crash only means re-publishing, so no fsync wait.
                conn = cast(asyncpg.Connection, pooled)
                await conn.execute("SET synchronous_commit TO off")
                while True:
                    messages, tail = _drain(await queue.get(), queue)
                    if tail is _MORE and 0 < len(messages) < batch_size and loop.time() < next_publish:
                        messages, tail = await _gather(messages, queue, next_publish, batch_size)
                    if published := len(messages):
                        await self._check_leader()
                        next_publish = loop.time() + interval_s
                        if not await self._publish_until_acked(messages):
                            return
                        await self._save_checkpoint(conn, messages[-1].checkpoint)
                        self.metrics.relay_published.inc(published)
                        self._db_backoff.reset()
                        del messages  # published: freed now rather than frozen below
                        self._gc.after_batch(published)
                    if isinstance(tail, BaseException):
                        raise tail
                    if tail is None or self.stop.is_set():
                        return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_ahead(self, queue: asyncio.Queue[_Encoded | BaseException | None]) -> None:
        """Feed `queue` with encoded batches; None when stopped, the exception when failing."""
        batches = self._store.subscribe_log(
            self.checkpoint,
            batch_size=self.settings.relay.batch_size,
            poll_interval_s=self.settings.store.poll_interval_s,
        )
        try:
            async with contextlib.aclosing(batches):
                while (batch := await self._next_batch(batches)) is not None:
                    messages = await self._encode(batch)
                    del batch  # see `_Encoded`
                    await queue.put(messages)
            await queue.put(None)
        except Exception as exc:  # handed to `_follow`, which raises it where it is handled
            if _cancelling():
                # `_follow` cancelled us and reads no more: waiting for a queue slot would hang
                # it (and the relay) for good. An error raised while unwinding is not news.
                raise asyncio.CancelledError from exc
            await queue.put(exc)

    async def _next_batch(self, batches: AsyncIterator[list[asyncpg.Record]]) -> list[LogEvent] | None:
        """The next batch as `LogEvent`s (None when stopped)."""
        rows = await self._next_or_stop(batches)
        return None if rows is None else list(map(_log_event, rows))

    async def _next_or_stop(
        self, batches: AsyncIterator[list[asyncpg.Record]]
    ) -> list[asyncpg.Record] | None:
        """The next batch, or None as soon as `stop` is set while waiting for one."""
        if self.stop.is_set():
            return None
        nxt: asyncio.Future[list[asyncpg.Record]] = asyncio.ensure_future(anext(batches))
        stopper: asyncio.Future[Any] = asyncio.ensure_future(self.stop.wait())
        waiting: set[asyncio.Future[Any]] = {nxt, stopper}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            return nxt.result() if nxt.done() else None
        finally:
            stopper.cancel()
            await _finish(nxt)

    async def _encode(self, batch: Sequence[LogEvent | RecordedEvent]) -> list[OutMessage]:
        """The records of `batch`, each envelope built right after its order view: no list of a
        batch's views is kept (orjson backs each with a buffer of at least 4 KiB)."""
        states = self.states
        await states.prepare(batch)
        advance = states.advance
        upcast = self.domain.upcast
        return [build_message(event, advance(event), upcast=upcast) for event in batch]

    async def _resume_point(self) -> Checkpoint:
        """Where to go on from: PostgreSQL's checkpoint, or (exactly-once) the last one committed
        in Kafka, read after this relay's producer fenced any other. Without one there (a relay
        switched from at-least-once, or a new one), or behind PostgreSQL's (at-least-once runs
        since), PostgreSQL's: both only ever name published events."""
        saved = await load_checkpoint(self.pool, self.name) or START
        if not self.exactly_once or self._publisher is None:
            return saved
        kafka = self.settings.kafka
        try:
            committed = await read_checkpoint(
                self.settings.bootstrap_servers,
                self._publisher.checkpoints_topic,
                self.name,
                kafka.request_timeout_ms,
            )
        except Exception as exc:  # the broker went away meanwhile: reconnect, then read again
            delay = self._broker_backoff.next_delay()
            _log.warning("relay.checkpoint_read_failed", error=repr(exc), retry_in_s=round(delay, 3))
            self.metrics.relay_broker_errors.labels(kind=type(exc).__name__).inc()
            await self._publisher.close(timeout_s=1.0)
            self._publisher = None
            await sleep_or_stop(self.stop, delay)
            raise _Resync from exc
        if committed is None:
            return saved
        for partition, end in committed.offsets.items():
            if end > self.saved_offsets.get(partition, 0):
                self.saved_offsets[partition] = end
        self._publisher.acked.update(self.saved_offsets)
        if saved > committed.checkpoint:
            # Exactly-once saves PostgreSQL's after the commit, so it is never ahead of Kafka's
            # within this mode: the relay ran at-least-once since its last exactly-once run, and
            # what it saved was published (acknowledged). Going back would publish it again.
            _log.info(
                "relay.resuming_from_postgres",
                reason="PostgreSQL's checkpoint is ahead of Kafka's (the relay ran at-least-once since)",
                postgres=list(saved),
                kafka=list(committed.checkpoint),
            )
            return saved
        return committed.checkpoint

    async def _publish_until_acked(self, messages: list[OutMessage]) -> bool:
        """Publish until acknowledged (True), or until stopped after a failed attempt (False).

        Exactly-once: a failed publish of records raises `_Resync` after the back-off (its
        transaction may have been committed), and a fenced producer `LeadershipLost`."""
        while True:
            try:
                if self._publisher is None:
                    publisher = self._publisher_factory()
                    await publisher.start(self.saved_offsets, may_create=self._may_create_topic())
                    self._publisher = publisher
                    self.readiness.clear("broker")
                    _log.info("relay.broker_connected", topic=self.topic)
                self._pending_offsets = await self._publisher.publish(messages) or {}
                self._broker_backoff.reset()
                return True
            except Exception as exc:  # any broker failure: drop the session, back off, retry
                if isinstance(exc, asyncio.CancelledError | BrokerDataLost | ExactlyOnceUnsupported):
                    if self._publisher is not None:
                        await self._publisher.close(timeout_s=1.0)
                        self._publisher = None
                    raise
                if isinstance(exc, ProducerFenced):
                    if self._publisher is not None:
                        await self._publisher.close(timeout_s=1.0)
                        self._publisher = None
                    _log.warning(
                        "relay.fenced", topic=self.topic, reason="another relay of the topic started"
                    )
                    raise LeadershipLost(f"{self.name}: producer fenced") from exc
                self.readiness.block("broker", f"broker unreachable: {type(exc).__name__}")
                kind = type(exc).__name__
                self.metrics.relay_broker_errors.labels(kind=kind).inc()
                delay = self._broker_backoff.next_delay()
                _log.warning(
                    "relay.broker_error",
                    error=repr(exc),
                    kind=kind,
                    retry_in_s=round(delay, 3),
                    pending=len(messages),
                )
                if self._publisher is not None:
                    await self._publisher.close(timeout_s=1.0)
                    self._publisher = None
                if await sleep_or_stop(self.stop, delay):
                    return False
                if self.exactly_once and messages:
                    raise _Resync from exc

    def _may_create_topic(self) -> bool:
        """Only a relay that never published may create its topic: for any other, a missing
        topic is a lost one (creating it would hide the loss)."""
        return not self.saved_offsets and self.checkpoint == START

    async def _load_saved(self) -> None:
        """Read the checkpoint and the acknowledged offsets saved with it (the truth, also after
        `ledger relay republish` replaced the offsets)."""
        self.checkpoint = await load_checkpoint(self.pool, self.name) or START
        self.saved_offsets = await load_offsets(self.pool, self.name)

    async def _hold(self, lost: BrokerDataLost) -> bool:
        """Publish nothing until the broker holds the topic up to the saved offsets again.

        Says so once per reason (log line, metric, readiness), then asks the broker every few
        seconds; the saved offsets are re-read each time, so a `ledger relay republish` (which
        replaces them with what the broker holds after re-publishing) releases the hold.
        Returns True when stopped first.
        """
        reason = ""
        while True:
            if lost.reason != reason:
                if reason:
                    self.metrics.relay_broker_data_lost.labels(reason=reason).set(0)
                reason = lost.reason
                self.metrics.relay_broker_data_lost.labels(reason=reason).set(1)
                self.readiness.block("broker", f"broker lost data ({reason}): {lost.detail}")
                _log.error(
                    "relay.broker_lost_data",
                    topic=self.topic,
                    reason=reason,
                    detail=lost.detail,
                    checkpoint_tx=self.checkpoint.tx,
                    checkpoint_position=self.checkpoint.position,
                    action="publishing stopped; run `ledger relay republish --from-position 0`"
                    " once the topic is back (or recreate it with the configured partitions)",
                )
            if await sleep_or_stop(self.stop, self._hold_poll_s):
                return True
            publisher = self._publisher_factory()
            try:
                await self._load_saved()
                await publisher.start(self.saved_offsets, may_create=False)
            except BrokerDataLost as again:
                lost = again
                await publisher.close(timeout_s=1.0)
                continue
            except Exception as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                _log.debug("relay.hold_check_failed", error=repr(exc))
                await publisher.close(timeout_s=1.0)
                continue
            self._publisher = publisher
            self.metrics.relay_broker_data_lost.labels(reason=reason).set(0)
            self.readiness.clear("broker")
            _log.info("relay.broker_data_restored", topic=self.topic, reason=reason)
            return False

    async def _check_leader(self) -> None:
        """Raise `LeadershipLost` unless this relay still holds its lock (checked before each publish).

        The lock was taken once; if its session died, a standby may hold it now, and publishing
        on would make two active relays (everything published twice, interleaved).
        """
        if self._still_leader is not None and not await self._still_leader():
            raise LeadershipLost(self.name)

    async def _save_checkpoint(self, conn: asyncpg.Connection, checkpoint: Checkpoint) -> None:
        """Save after the acknowledgement. A database error propagates: `run` backs off and
        resumes from the saved checkpoint, re-publishing the acknowledged batch (at-least-once)."""
        pending = self._pending_offsets
        await save_checkpoint_and_offsets(conn, self.name, checkpoint, pending)
        self.checkpoint = checkpoint
        self.saved_offsets.update(pending)

    async def _lag_loop(self) -> None:
        """Keep the lag gauges fresh, also while the broker is away (that is when they matter)."""
        while True:
            started = time.monotonic()
            try:
                row = await self.pool.fetchrow(_LAG_SQL, self.checkpoint.tx, self.checkpoint.position)
                if row is not None:
                    self.metrics.relay_lag_events.set(row["n"])
                    self.metrics.relay_lag_seconds.set(row["age"] if row["n"] else 0.0)
                fence = await self._store.fence_status()
                self.metrics.fence_lag_seconds.set(fence.oldest_writer_age_s or 0.0)
            except _DB_ERRORS as exc:
                _log.debug("relay.lag_query_failed", error=repr(exc))
            await asyncio.sleep(max(self._lag_interval_s - (time.monotonic() - started), 0.05))


async def run_relay(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    stop: asyncio.Event | None = None,
    metrics: Metrics = METRICS,
    topic: str | None = None,
    readiness: Readiness | None = None,
) -> None:
    """Run the relay until `stop` is set (forever without one); creates a pool when none is given."""
    readiness = readiness if readiness is not None else Readiness()
    stop = stop or asyncio.Event()
    own_pool = pool is None
    if pool is None:
        pool = await _connect(settings, stop)
        if pool is None:
            return
    backoff = Backoff(settings.relay.backoff_initial_s, settings.relay.backoff_max_s)
    try:
        while not stop.is_set():
            try:
                await _term(settings, pool, stop, metrics, topic, readiness=readiness)
                backoff.reset()
            except (*_DB_ERRORS, LeadershipLost) as exc:
                _log.warning("relay.stepped_down", topic=topic, error=repr(exc))
                await sleep_or_stop(stop, backoff.next_delay())
    finally:
        if own_pool:
            await pool.close()


async def _term(
    settings: Settings,
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    metrics: Metrics,
    topic: str | None,
    *,
    readiness: Readiness,
) -> None:
    """One term: standby until this process holds the lock, then active until stopped; raises
    `LeadershipLost` (back to standby) when the lock's session is gone."""
    async with pool.acquire() as conn:
        still_leader = functools.partial(_session_alive, conn)
        relay = Relay(
            settings,
            pool,
            stop=stop,
            metrics=metrics,
            topic=topic,
            still_leader=still_leader,
            readiness=readiness,
        )
        readiness.block("role", "standby: waiting for the relay lock (held by another relay)")
        if await _lead(conn, relay.name, stop):
            readiness.clear("role")
            try:
                await relay.run()
            finally:
                with contextlib.suppress(*_DB_ERRORS):
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", relay.name)


async def _session_alive(conn: Connection) -> bool:
    """True while the lock's session answers: a session advisory lock lives exactly as long as it."""
    try:
        await conn.fetchval("SELECT 1", timeout=_LEADER_CHECK_TIMEOUT_S)
    except _DB_ERRORS as exc:
        _log.warning("relay.lock_session_lost", error=repr(exc))
        return False
    return True


async def _lead(conn: Connection, name: str, stop: asyncio.Event, poll_s: float = 1.0) -> bool:
    """Wait as a standby until this process holds the relay's advisory lock (False if stopped first).

    Two relays on one topic would not reorder anything (each publishes in log order from the
    shared checkpoint), but they would publish everything twice. The session lock makes a second
    instance a hot standby that takes over when the first one's connection goes away; the
    active one checks that session before each publish and steps down when it is gone
    (`_session_alive`), or it would keep publishing beside the new leader.
    """
    announced = False
    while not stop.is_set():
        if await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name):
            _log.info("relay.active", checkpoint=name)
            return True
        if not announced:
            _log.info("relay.standby", checkpoint=name, reason="another relay holds the lock")
            announced = True
        if await sleep_or_stop(stop, poll_s):
            break
    return False


async def _connect(settings: Settings, stop: asyncio.Event) -> asyncpg.Pool | None:
    """A pool, retried with back-off while the database is unreachable (None if stopped first)."""
    backoff = Backoff(settings.relay.backoff_initial_s, settings.relay.backoff_max_s)
    while True:
        try:
            return await create_pool(
                settings.database_url, settings.store, application_name="ledger-relay", min_size=1, max_size=5
            )
        except _DB_ERRORS as exc:
            _log.warning("relay.database_unreachable", error=repr(exc))
            if await sleep_or_stop(stop, backoff.next_delay()):
                return None

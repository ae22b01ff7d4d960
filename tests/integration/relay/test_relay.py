"""The relay against real PostgreSQL and a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from consumers.fanout.mapping_types import Envelope
from ledger.relay import KafkaPublisher, RelayConfigError, checkpoint_name, producer_options, run_relay
from ledger.relay.message import LogEvent, OutMessage
from ledger.relay.publisher import TopicPartitionsChanged, ensure_topic
from ledger.relay.relay import Relay
from ledger.store import NO_STREAM, Checkpoint, EventStore
from ledger.store.reads import read_log
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import KafkaSettings, Settings
from tests.harness.kafka import create_topic, read_to_end
from tests.integration.relay.support import (
    check_topic,
    committed_events,
    placed,
    relay_settings,
    settled_head,
    status,
    stream_of,
)

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

HEADERS = {"event_id", "type", "schema_version", "content-type"}


@contextlib.asynccontextmanager
async def running_relay(
    settings: Settings, pool: asyncpg.Pool, metrics: Metrics | None = None, **kwargs: object
) -> AsyncIterator[Metrics]:
    """The relay in a task of this loop; stopped (and awaited) on exit.

    The topic is created first, as the relay would: a test's consumer started beside the relay
    could otherwise auto-create it with the broker's default partitions, which the relay refuses.
    """
    kafka = settings.kafka
    await ensure_topic(
        settings.bootstrap_servers, kafka.events_topic, kafka.partitions, kafka.request_timeout_ms
    )
    metrics = metrics or Metrics()
    stop = asyncio.Event()
    if kwargs:
        relay = Relay(settings, pool, stop=stop, metrics=metrics, lag_interval_s=0.1, **kwargs)  # type: ignore[arg-type]
        task = asyncio.create_task(relay.run())
    else:
        task = asyncio.create_task(run_relay(settings, pool=pool, stop=stop, metrics=metrics))
    try:
        yield metrics
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def saved_checkpoint(pool: asyncpg.Pool, topic: str) -> Checkpoint | None:
    row = await pool.fetchrow("SELECT tx, position FROM checkpoints WHERE name = $1", checkpoint_name(topic))
    return None if row is None else Checkpoint(row["tx"], row["position"])


async def wait_for_checkpoint(
    pool: asyncpg.Pool, topic: str, target: Checkpoint, timeout_s: float = 20
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (cp := await saved_checkpoint(pool, topic)) is None or cp < target:
        assert asyncio.get_running_loop().time() < deadline, f"checkpoint {cp} never reached {target}"
        await asyncio.sleep(0.05)


async def append_orders(store: EventStore, orders: int, updates: int) -> list[uuid.UUID]:
    """`orders` new orders with `updates` status changes each; every third also a two-event append."""
    ids = [uuid.uuid4() for _ in range(orders)]
    for i, order_id in enumerate(ids):
        await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
        version = 1
        for n in range(updates):
            await store.append(stream_of(order_id), [status(f"s{n}")], version)
            version += 1
        if i % 3 == 0:
            await store.append(stream_of(order_id), [status("a"), status("b")], version)
    return ids


async def test_publishes_every_event_in_log_order_keyed_by_order_id_with_envelope_and_headers(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=7)
    ids = [uuid.uuid4() for _ in range(5)]
    for order_id in ids:
        await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
        await store.append(stream_of(order_id), [status("processing"), status("shipped")], 1)
    committed = await committed_events(pool)
    async with running_relay(settings, pool) as metrics:
        await wait_for_checkpoint(pool, unique_topic, (await settled_head(pool)))
    records = await read_to_end(kafka_bootstrap, unique_topic)
    assert len(records) == len(committed) == 15
    check = check_topic(records, committed)
    assert check.ok, check
    assert check.duplicates == 0
    assert metrics.relay_published._value.get() == 15

    # Log order per partition, key = order id, one partition per key.
    log_index = {event_id: i for i, (event_id, _, _) in enumerate(committed)}
    by_partition: dict[int, list[int]] = {}
    partition_of: dict[bytes, set[int]] = {}
    for record in records:
        envelope = orjson.loads(record.value)
        by_partition.setdefault(record.partition, []).append(log_index[envelope["event_id"]])
        partition_of.setdefault(record.key, set()).add(record.partition)
    assert all(indexes == sorted(indexes) for indexes in by_partition.values())
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert {key.decode() for key in partition_of} == {str(i) for i in ids}

    # Envelope: exact keys and values; headers.
    first = next(r for r in records if orjson.loads(r.value)["version"] == 1)
    envelope = orjson.loads(first.value)
    assert list(envelope) == [
        "event_id", "order_id", "stream_id", "version", "position", "type", "schema_version",
        "data", "metadata", "recorded_at", "order",
    ]  # fmt: skip
    assert envelope["stream_id"] == f"order-{envelope['order_id']}"
    assert envelope["type"] == "OrderPlaced"
    assert envelope["schema_version"] == 1
    assert envelope["data"]["order_id"] == envelope["order_id"]
    assert "type" not in envelope["data"]
    assert envelope["metadata"] == {"actor": "test", "source": "relay-tests"}
    assert envelope["order"]["id"] == envelope["order_id"]
    # The fan-out workers' parser reads it back to the same order (the cross-package contract).
    parsed = Envelope.from_bytes(first.value)
    assert (parsed.event_id, parsed.version, parsed.order.version) == (envelope["event_id"], 1, 1)
    assert str(parsed.order.id) == envelope["order_id"]
    headers = dict(first.headers)
    assert set(headers) == HEADERS
    assert headers["event_id"].decode() == envelope["event_id"]
    assert headers["type"] == b"OrderPlaced"
    assert headers["schema_version"] == b"1"
    assert headers["content-type"] == b"application/json"
    assert first.timestamp == int(
        __import__("datetime").datetime.fromisoformat(envelope["recorded_at"]).timestamp() * 1000
    )


async def test_envelope_carries_the_order_state_after_each_event_with_exact_money(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic)
    order_id = uuid.uuid4()
    await store.append(stream_of(order_id), [placed(order_id, price=1990, quantity=3)], NO_STREAM)
    await store.append(stream_of(order_id), [status("processing"), status("packed")], 1)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    records = await read_to_end(kafka_bootstrap, unique_topic)
    assert len(records) == 3
    envelopes = [orjson.loads(r.value) for r in records]
    assert [e["order"]["version"] for e in envelopes] == [1, 2, 3]
    assert [e["order"]["status"] for e in envelopes] == ["pending", "processing", "packed"]
    # Money is an exact JSON number with the currency's decimals, never a float round trip.
    raw = records[0].value.decode()
    assert '"total":59.70' in raw.replace(" ", "")
    import json

    exact = json.loads(raw, parse_float=Decimal)
    assert exact["order"]["total"] == Decimal("59.70")


async def test_a_cold_cache_refold_gives_byte_identical_messages(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    """A restart (empty cache: the order is folded from the store) re-publishes the same bytes."""
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic)
    order_id = uuid.uuid4()
    await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
    await store.append(stream_of(order_id), [status("a"), status("b"), status("c")], 1)
    for _ in range(1500):  # the fence is cluster-wide: another test's transaction may hold it
        if len(events := await store.read_all(limit=100)) == 4:
            break
        await asyncio.sleep(0.02)
    assert len(events) == 4, "the fence did not pass the four events within 30 s"
    logged = [LogEvent._make(row) for row in await read_log(pool, limit=100)]  # the relay's read
    assert [e.checkpoint for e in logged] == [e.checkpoint for e in events]
    warm = Relay(settings, pool, stop=asyncio.Event(), metrics=Metrics())
    warm_messages = await warm._encode(logged)
    cold = Relay(settings, pool, stop=asyncio.Event(), metrics=Metrics())
    cold_messages = await cold._encode(logged[2:])  # starts at version 3: folds v1..v2 from the store
    assert cold.states.misses == 1
    assert [(m.key, m.value, m.headers, m.timestamp_ms) for m in cold_messages] == [
        (m.key, m.value, m.headers, m.timestamp_ms) for m in warm_messages[2:]
    ]
    # The same bytes from the decoded events of the store's `read_all` (data and metadata as dicts).
    decoded = Relay(settings, pool, stop=asyncio.Event(), metrics=Metrics())
    assert await decoded._encode(events) == warm_messages


class SpyPublisher(KafkaPublisher):
    """Records the saved checkpoint before and right after each acknowledged publish."""

    seen: list[tuple[Checkpoint | None, Checkpoint | None, Checkpoint]]
    pool: asyncpg.Pool
    fail_times: int = 0

    async def publish(self, messages: list[OutMessage]) -> dict[int, int]:  # type: ignore[override]
        if not messages:  # the start-up connection check
            return await super().publish(messages)
        before = await saved_checkpoint(self.pool, self.topic)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("broker said no")
        acked = await super().publish(messages)
        after_ack = await saved_checkpoint(self.pool, self.topic)
        self.seen.append((before, after_ack, messages[-1].checkpoint))
        return acked


async def test_checkpoint_is_saved_only_after_the_broker_acknowledged_the_whole_batch(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=4)
    seen: list[tuple[Checkpoint | None, Checkpoint | None, Checkpoint]] = []
    sessions: list[SpyPublisher] = []

    def factory() -> KafkaPublisher:
        spy = SpyPublisher(settings.kafka, settings.bootstrap_servers, unique_topic)
        spy.seen, spy.pool, spy.fail_times = seen, pool, 1 if len(sessions) < 2 else 0
        sessions.append(spy)
        return spy

    await append_orders(store, orders=5, updates=2)
    head = await settled_head(pool)
    async with running_relay(settings, pool, publisher_factory=factory) as metrics:
        await wait_for_checkpoint(pool, unique_topic, head)
    assert len(seen) >= 3
    for before, after_ack, batch_end in seen:
        # Acknowledged but not yet checkpointed: the saved checkpoint is still before this batch.
        assert before == after_ack
        assert after_ack is None or after_ack < batch_end
    assert metrics.relay_broker_errors.labels(kind="ConnectionError")._value.get() == 2
    assert await saved_checkpoint(pool, unique_topic) == head


async def test_restart_resumes_from_the_saved_checkpoint(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=10)
    await append_orders(store, orders=6, updates=2)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    first_run = len(await committed_events(pool))
    await append_orders(store, orders=4, updates=1)
    committed = await committed_events(pool)
    async with running_relay(settings, pool) as metrics:
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    records = await read_to_end(kafka_bootstrap, unique_topic)  # the checkpoint reached the head
    assert len(records) == len(committed)
    check = check_topic(records, committed)
    assert check.ok, check
    assert check.duplicates == 0  # a clean stop saved the checkpoint: nothing re-published
    assert metrics.relay_published._value.get() == len(committed) - first_run


class CountingPublisher(KafkaPublisher):
    """Records how many records each (non-empty) publish carried."""

    sizes: list[int]

    async def publish(self, messages: list[OutMessage]) -> None:  # type: ignore[override]
        await super().publish(messages)
        if messages:
            self.sizes.append(len(messages))


async def test_caught_up_appends_within_the_publish_interval_go_out_together_in_order(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    """An idle relay publishes an event at once; events appended one by one soon after it wait
    for the interval and go out together, in log order, then checkpointed."""
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=500)
    settings.relay.publish_interval_ms = 3_000  # far longer than 20 appends take
    sizes: list[int] = []

    def factory() -> KafkaPublisher:
        publisher = CountingPublisher(settings.kafka, settings.bootstrap_servers, unique_topic)
        publisher.sizes = sizes
        return publisher

    order_id = uuid.uuid4()
    await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
    async with running_relay(settings, pool, publisher_factory=factory):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
        assert sizes == [1]  # idle before it: not held back
        for version in range(1, 21):  # one transaction (and one NOTIFY) each
            await store.append(stream_of(order_id), [status(f"s{version}")], version)
        head = await settled_head(pool)
        await wait_for_checkpoint(pool, unique_topic, head)
    assert sum(sizes) == 21
    assert len(sizes) <= 3  # 20 single-event appends in one or two publishes (0 ms: up to 20)
    committed = await committed_events(pool)
    records = await read_to_end(kafka_bootstrap, unique_topic)  # the checkpoint reached the head
    assert len(records) == len(committed)
    check = check_topic(records, committed)
    assert check.ok, check
    assert check.duplicates == 0
    assert await saved_checkpoint(pool, unique_topic) == head


HOLD_KEY = 424242
HOLD_TRIGGER = f"""
CREATE FUNCTION test_hold_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.metadata ->> 'hold' = 'yes' THEN
        PERFORM pg_advisory_xact_lock_shared({HOLD_KEY});
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_hold BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_hold_insert();
"""


async def test_never_passes_a_held_open_transaction_and_publishes_it_after_release(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    """docs/reliability.md#f2: a transaction with a smaller tx commits after a later one.

    One partition, so the topic shows the publish order: the held event (smaller tx) goes
    before the one that committed first, as the fenced log orders them.
    """
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, partitions=1)
    await create_topic(kafka_bootstrap, unique_topic, partitions=1)  # before any consumer can auto-create it
    await pool.execute(HOLD_TRIGGER)
    early, held, late = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await store.append(stream_of(early), [placed(early)], NO_STREAM)
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", HOLD_KEY)
        held_event = placed(held)
        held_event = type(held_event)(
            type=held_event.type, data=held_event.data, metadata={"hold": "yes"}, event_id=held_event.event_id
        )
        held_append = asyncio.create_task(store.append(stream_of(held), [held_event], NO_STREAM))
        # The held append has its xid and waits inside the trigger.
        held_tx = None
        async with asyncio.timeout(30):
            while held_tx is None:
                assert not held_append.done()
                await asyncio.sleep(0.01)
                held_tx = await pool.fetchval(
                    "SELECT backend_xid::text::bigint FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND backend_xid IS NOT NULL AND datname = current_database()"
                )
        await store.append(stream_of(late), [placed(late)], NO_STREAM)  # larger tx, commits first
        early_row = await pool.fetchrow(
            "SELECT tx, position FROM events WHERE stream_id = $1", stream_of(early)
        )
        assert early_row is not None
        async with running_relay(settings, pool):
            await wait_for_checkpoint(pool, unique_topic, Checkpoint(early_row["tx"], early_row["position"]))
            records = await read_to_end(kafka_bootstrap, unique_topic)
            assert [r.key for r in records] == [str(early).encode()]
            cp = await saved_checkpoint(pool, unique_topic)
            assert cp is not None
            assert cp.tx < held_tx  # the checkpoint never passes the open transaction
            await holder.execute("SELECT pg_advisory_unlock($1)", HOLD_KEY)
            await held_append
            await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
            records = await read_to_end(kafka_bootstrap, unique_topic)
    finally:
        await holder.close()
    assert [r.key for r in records] == [str(early).encode(), str(held).encode(), str(late).encode()]
    check = check_topic(records, await committed_events(pool))
    assert check.ok, check


async def test_topic_is_created_at_start_up_with_the_configured_partitions(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, partitions=5)
    order_id = uuid.uuid4()
    await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
    async with running_relay(settings, pool):
        await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([unique_topic])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 5


async def test_a_topic_whose_partition_count_differs_from_the_settings_is_refused(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    """Another count maps keys to other partitions: an order's later events could be consumed
    before its earlier ones. The publisher refuses to start (the relay holds, logging it)."""
    await ensure_topic(kafka_bootstrap, unique_topic, 5, 10_000)
    with pytest.raises(TopicPartitionsChanged, match="has 5 partitions, the settings say 6"):
        await ensure_topic(kafka_bootstrap, unique_topic, 6, 10_000)
    await ensure_topic(kafka_bootstrap, unique_topic, 5, 10_000)  # as configured: fine


async def test_producer_config_is_acks_all_and_settings_flow_through() -> None:
    """docs/reliability.md#f9 (configuration half): what the relay asks of the producer."""
    options = producer_options(KafkaSettings(), "b:9092")
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is False  # Tansu has none; real Kafka: turn it on
    assert "transactional_id" not in options
    kafka = KafkaSettings(enable_idempotence=True, request_timeout_ms=1234)
    options = producer_options(kafka, "b:9092", transactional_id="relay-1")
    assert options["enable_idempotence"] is True
    assert options["transactional_id"] == "relay-1"
    assert options["request_timeout_ms"] == 1234
    producer = AIOKafkaProducer(**producer_options(KafkaSettings(enable_idempotence=True), "b:9092"))
    try:
        assert producer._txn_manager is not None  # idempotence really reached aiokafka
    finally:
        await producer.stop()  # never started; stopping closes it (no "unclosed producer" warning)
    with pytest.raises(RelayConfigError):
        producer_options(KafkaSettings(acks="1"), "b:9092")


async def test_a_second_relay_waits_as_standby_and_takes_over_when_the_first_stops(
    store: EventStore, pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=10)
    await append_orders(store, orders=3, updates=1)
    standby_pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    try:
        async with running_relay(settings, pool):
            await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
            async with running_relay(settings, standby_pool) as standby_metrics:
                await append_orders(store, orders=2, updates=1)
                await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
                assert standby_metrics.relay_published._value.get() == 0  # the active one published
            committed = await committed_events(pool)
        # The first relay stopped and released its lock: a new instance becomes active at once.
        await append_orders(store, orders=2, updates=0)
        async with running_relay(settings, standby_pool) as taken_over:
            await wait_for_checkpoint(pool, unique_topic, await settled_head(pool))
        assert taken_over.relay_published._value.get() == len(await committed_events(pool)) - len(committed)
    finally:
        await standby_pool.close()
    records = await read_to_end(kafka_bootstrap, unique_topic)  # the checkpoint reached the head
    assert len(records) == len(await committed_events(pool))
    check = check_topic(records, await committed_events(pool))
    assert check.ok, check
    assert check.duplicates == 0

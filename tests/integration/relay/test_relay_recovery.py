"""The relay recovering from trouble that used to wedge or stop it (fake publisher, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from ledger.relay.message import OutMessage
from ledger.relay.relay import Relay, run_relay
from ledger.store import NO_STREAM, Checkpoint, EventStore, XidHorizonError, check_xid_horizon, create_pool
from ledger_kernel.observability import Metrics, Readiness
from tests.integration.relay.support import placed, relay_settings, stream_of

pytestmark = [pytest.mark.postgres]


class FakePublisher:
    """Acknowledges everything after `ack_s` (a slow ack lets the reader fill its queue)."""

    def __init__(self, ack_s: float = 0.0) -> None:
        self.ack_s = ack_s
        self.published: list[OutMessage] = []

    async def start(self, *_: object, **__: object) -> None:
        pass

    async def close(self, timeout_s: float = 5.0) -> None:
        pass

    async def publish(self, messages: list[OutMessage]) -> None:
        if messages and self.ack_s:
            await asyncio.sleep(self.ack_s)
        self.published.extend(messages)


class FailingCheckpointRelay(Relay):
    """Loses its database connection on the first checkpoint save."""

    fails = 1

    async def _save_checkpoint(self, conn: asyncpg.Connection, checkpoint: Checkpoint) -> None:
        if self.fails:
            self.fails -= 1
            raise asyncpg.InterfaceError("simulated: connection lost while saving the checkpoint")
        await super()._save_checkpoint(conn, checkpoint)


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)


async def wait_until_async(predicate: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_database_error_on_checkpoint_save_with_a_backlog_recovers_and_stop_ends_run(
    store: EventStore, pool: asyncpg.Pool, database_url: str
) -> None:
    settings = relay_settings(database_url, "127.0.0.1:1", "t", batch_size=10)
    ids = [uuid.uuid4() for _ in range(30)]  # 3 batches: one in flight, two filling the read-ahead queue
    for order_id in ids:
        await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
    publisher = FakePublisher(ack_s=0.3)
    stop = asyncio.Event()
    relay = FailingCheckpointRelay(
        settings,
        pool,
        stop=stop,
        metrics=Metrics(),
        publisher_factory=lambda: publisher,  # type: ignore[arg-type,return-value]
    )
    task = asyncio.create_task(relay.run())
    try:
        keys = {str(i).encode() for i in ids}
        await wait_until(
            lambda: keys <= {m.key for m in publisher.published},
            20,
            "the relay did not publish the backlog after the database error",
        )
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=5)
        if not done:
            task.cancel()
    assert done, "run() did not return after stop"
    task.result()
    assert pool.get_size() - pool.get_idle_size() == 0, "a pool connection is still in use"


async def test_an_event_newer_than_this_code_is_published_as_stored_and_later_events_still_flow(
    store: EventStore, pool: asyncpg.Pool, database_url: str
) -> None:
    settings = relay_settings(database_url, "127.0.0.1:1", "t")
    poisoned = uuid.uuid4()
    await store.append(stream_of(poisoned), [placed(poisoned)], NO_STREAM)
    # What a newer writer appends during a rolling deploy: OrderStatusChanged v2, unknown here.
    await pool.fetchrow(
        "SELECT * FROM ledger_append($1, 1, $2, $3, $4, $5, $6, NULL, NULL, NULL, NULL)",
        stream_of(poisoned),
        [uuid.uuid4()],
        ["OrderStatusChanged"],
        [2],
        ['{"status": "paid", "new_field": 1}'],
        ["{}"],
    )
    later = [uuid.uuid4() for _ in range(5)]
    for order_id in later:
        await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
    publisher = FakePublisher()
    stop = asyncio.Event()
    relay = Relay(settings, pool, stop=stop, metrics=Metrics(), publisher_factory=lambda: publisher)  # type: ignore[arg-type,return-value]
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: len(publisher.published) >= 7 or task.done(), 20, "not all 7 published")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert len(publisher.published) == 7
    assert {m.key for m in publisher.published} == {str(i).encode() for i in [poisoned, *later]}
    newer = orjson.loads(next(m.value for m in publisher.published if m.version == 2))
    assert (newer["type"], newer["schema_version"]) == ("OrderStatusChanged", 2)
    assert newer["data"] == {"status": "paid", "new_field": 1}
    assert newer["order"] is None


async def test_a_leader_whose_lock_session_dies_steps_down_so_only_one_relay_publishes(
    store: EventStore, pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: dict[str, int] = {"A": 0, "B": 0}

    class CountingPublisher(FakePublisher):
        """Counts per relay task (named A and B) what it was asked to publish."""

        def __init__(self, *_: object, **__: object) -> None:
            super().__init__()

        async def publish(self, messages: list[OutMessage]) -> None:
            task = asyncio.current_task()
            assert task is not None
            published[task.get_name()] += len(messages)

    monkeypatch.setattr("ledger.relay.relay.KafkaPublisher", CountingPublisher)
    settings = relay_settings(database_url, "127.0.0.1:1", "t")
    pool_b = await create_pool(database_url, settings.store)
    stop = asyncio.Event()
    a_readiness = Readiness()
    a = asyncio.create_task(
        run_relay(settings, pool=pool, stop=stop, metrics=Metrics(), readiness=a_readiness), name="A"
    )
    b: asyncio.Task[None] | None = None
    try:
        lock_holder = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = $1"
        db_oid = await pool.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
        await wait_until_async(lambda: pool.fetchval(lock_holder, db_oid), 10, "relay A never led")
        # A network blip on that one session: the lock is gone with it.
        old_pid = await pool.fetchval(lock_holder, db_oid)
        await pool_b.execute("SELECT pg_terminate_backend($1)", old_pid)
        b = asyncio.create_task(run_relay(settings, pool=pool_b, stop=stop, metrics=Metrics()), name="B")

        async def b_leads() -> bool:
            return await pool.fetchval(lock_holder, db_oid) not in {None, old_pid}

        await wait_until_async(b_leads, 10, "relay B never led")
        for _ in range(20):
            order_id = uuid.uuid4()
            await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
        await wait_until(lambda: published["B"] >= 20, 20, f"relay B did not publish everything: {published}")
        # A publishes only while it leads: once it is back on standby (its lock lost with its
        # session, B holding it now), its count is final.
        await wait_until(lambda: "role" in a_readiness.reasons, 20, "relay A never went back to standby")
        assert published == {"A": 0, "B": 20}
        assert not a.done(), "the old leader went back to standby, it did not exit"
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(a, *([b] if b else [])), 10)
        await pool_b.close()


async def test_the_relay_refuses_to_start_when_stored_tx_is_ahead_of_the_clusters_xids(
    store: EventStore, pool: asyncpg.Pool, database_url: str
) -> None:
    order_id = uuid.uuid4()
    await store.append(stream_of(order_id), [placed(order_id)], NO_STREAM)
    await check_xid_horizon(pool)  # a healthy database passes
    async with pool.acquire() as conn, conn.transaction():
        # What a restore into a cluster with a lower xid counter leaves (the log is append-only).
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE events SET tx = (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8"
        )
    settings = relay_settings(database_url, "127.0.0.1:1", "t")
    publisher = FakePublisher()
    relay = Relay(
        settings,
        pool,
        stop=asyncio.Event(),
        metrics=Metrics(),
        publisher_factory=lambda: publisher,  # type: ignore[arg-type,return-value]
    )
    with pytest.raises(XidHorizonError, match="xid epoch"):
        await asyncio.wait_for(relay.run(), 10)
    assert publisher.published == []

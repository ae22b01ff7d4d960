"""The event store: appends with optimistic concurrency and idempotency, reads, subscriptions.

An append is one statement (`statements.py`): one round trip, one implicit transaction,
all-or-nothing. One event at an exact version without an idempotency key takes the
single-statement fast path; everything else calls the `ledger_append` SQL function (migration
0005). Both report the common outcomes; races between concurrent appends end in a unique
violation (stream version, event id or idempotency key), after which `_resolve` looks at what
committed and answers the caller (replay, conflict, duplicate, or a retry for `ANY`). Appends
run on `AppendLanes`, pool connections kept leased while appends keep coming.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import orjson
from pydantic import BaseModel

from ledger.store import reads
from ledger.store.chain import verify_stream
from ledger.store.errors import ConcurrencyConflict, DuplicateEventId, ExternalIdTaken, IdempotencyKeyReused
from ledger.store.event_types import EventRegistry
from ledger.store.lanes import AppendLanes
from ledger.store.notify import CHANNEL, Notifier
from ledger.store.records import (
    START,
    AppendResult,
    ChainVerification,
    Checkpoint,
    Connection,
    EventCodec,
    Executor,
    ExpectedVersion,
    FenceStatus,
    IdempotencyClaim,
    IdempotencyRequest,
    NewDataKey,
    NewEvent,
    RecordedEvent,
    StoredIdempotency,
)
from ledger.store.statements import APPEND_ONE_KEY_SQL, APPEND_ONE_SQL, APPEND_SQL
from ledger.store.validation import STREAM_ID_PATTERN, PreparedAppend, expected_value, prepare_append
from ledger_kernel.settings import StoreSettings

_EXISTING_SQL = (
    "SELECT event_id, stream_id, version, position, tx, type, schema_version, data"
    " FROM events WHERE event_id = ANY($1::uuid[]) ORDER BY version"
)
_IDEM_SQL = (
    "SELECT client_id, key, fingerprint, outcome, stream_id, created_at"
    " FROM idempotency_keys WHERE client_id = $1 AND key = $2"
)
_CLAIM_SQL = """
WITH stored AS (
    SELECT fingerprint, outcome FROM idempotency_keys WHERE client_id = $1 AND key = $2
), claim AS (
    INSERT INTO idempotency_inflight (client_id, key, claim_id)
    SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM stored)
    ON CONFLICT (client_id, key) DO UPDATE SET claim_id = excluded.claim_id, started_at = clock_timestamp()
        WHERE idempotency_inflight.started_at < clock_timestamp() - make_interval(secs => $4)
    RETURNING claim_id
)
SELECT (SELECT fingerprint FROM stored) AS fingerprint, (SELECT outcome FROM stored) AS outcome,
       (SELECT claim_id FROM claim) AS claim_id
"""
_RELEASE_SQL = "DELETE FROM idempotency_inflight WHERE client_id = $1 AND key = $2 AND claim_id = $3"
_EXTERNAL_SQL = "SELECT stream_id FROM order_external_ids WHERE source = $1 AND external_id = $2"
#: The SQLSTATE migration 0021's trigger raises for a taken external id (DETAIL: the holder).
_EXTERNAL_ID_SQLSTATE = "LX409"
_ANY_RETRIES = 10
_Row = TypeVar("_Row")


class _KeyLost(Exception):
    """`APPEND_ONE_KEY_SQL` appended nothing: the subject already had a stored key, which
    `live` is (id, wrapped) when the statement could see it."""

    def __init__(self, live: tuple[UUID, bytes] | None) -> None:
        super().__init__()
        self.live = live


AppendObserver = Callable[[float, int, str], None]
"""Called after every append with (seconds, events appended, outcome) — the metrics hook."""


async def load_checkpoint(db: Executor, name: str) -> Checkpoint | None:
    """A reader's saved checkpoint, or None."""
    row = await db.fetchrow("SELECT tx, position FROM checkpoints WHERE name = $1", name)
    return None if row is None else Checkpoint(row["tx"], row["position"])


async def save_checkpoint(conn: Connection, name: str, checkpoint: Checkpoint) -> None:
    """Upsert a checkpoint; call it inside the transaction that applies the reader's effects."""
    await conn.execute(
        "INSERT INTO checkpoints (name, tx, position) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, position = excluded.position,"
        " updated_at = clock_timestamp()",
        name,
        checkpoint.tx,
        checkpoint.position,
    )


class EventStore:
    """PostgreSQL event store over an asyncpg pool made by `create_pool`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: EventRegistry,
        settings: StoreSettings | None = None,
        *,
        stream_pattern: re.Pattern[str] = STREAM_ID_PATTERN,
        notify_debounce_s: float = 0.01,
        observe: AppendObserver | None = None,
        codec: EventCodec | None = None,
    ) -> None:
        self.pool = pool
        #: Applied to event data around appends and stream reads (docs/privacy.md); None: as given.
        self.codec = codec
        self.observe = observe
        self.registry = registry
        self.settings = settings or StoreSettings()
        self.stream_pattern = stream_pattern
        # At most half the pool, so a burst of appends never starves readers of connections.
        lanes = min(self.settings.append_connections, max(1, pool.get_max_size() // 2))
        self._lanes = AppendLanes(pool, lanes)
        self._notifier = Notifier(self._lanes.fetchrow, notify_debounce_s)

    async def aclose(self) -> None:
        """Flush the pending wake-up notification and give the append connections back (the
        pool belongs to the caller)."""
        await self._notifier.aclose()
        await self._lanes.aclose()

    # -- appends -------------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion,
        *,
        idempotency: IdempotencyRequest | None = None,
    ) -> AppendResult:
        """Append `events` to a stream in one transaction, all or nothing.

        Raises `ConcurrencyConflict` when the stream is not at `expected_version`,
        `IdempotencyKeyReused` when the key was used for another request, `DuplicateEventId`
        when an event id exists with other content, and `InvalidInput` subclasses for bad input
        (before touching the database). Re-appending existing event ids with the same content, or
        repeating a request under the same idempotency key, returns `replayed=True`.
        """
        if self.observe is None:
            return await self._append_encoded(stream_id, events, expected_version, idempotency)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await self._append_encoded(stream_id, events, expected_version, idempotency)
            outcome = "replayed" if result.replayed else "appended"
            return result
        except ConcurrencyConflict:
            outcome = "conflict"
            raise
        finally:
            self.observe(time.perf_counter() - started, len(events) if outcome == "appended" else 0, outcome)

    async def _append_encoded(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion,
        idempotency: IdempotencyRequest | None,
    ) -> AppendResult:
        """`_append_checked` of the codec's form of `events`.

        A fast-path append (one event, exact version, no key) lets the codec seal under a new
        subject's first key, which `APPEND_ONE_KEY_SQL` stores in the append's own statement;
        if a concurrent append stored the subject's key first, the events are sealed again under
        the stored key (`encode`) and appended as usual.
        """
        codec = self.codec
        if codec is None:
            return await self._append_checked(stream_id, events, expected_version, idempotency)
        if len(events) != 1 or idempotency is not None or expected_value(expected_version) < 0:
            return await self._append_checked(
                stream_id, await codec.encode(stream_id, events), expected_version, idempotency
            )
        sealed, new_key = await codec.encode_append(stream_id, events)
        if new_key is None:
            return await self._append_checked(stream_id, sealed, expected_version, None)
        stored, live = False, None
        try:
            result = await self._append_checked(stream_id, sealed, expected_version, None, new_key)
            stored = not result.replayed  # a replay's statement failed: its key insert rolled back
            return result
        except _KeyLost as lost:
            live = lost.live
        finally:
            codec.settle(new_key, stored=stored, live=live)
        return await self._append_checked(
            stream_id, await codec.encode(stream_id, events), expected_version, None
        )

    async def _append_checked(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion,
        idempotency: IdempotencyRequest | None,
        new_key: NewDataKey | None = None,
    ) -> AppendResult:
        """`_append`, with migration 0021's external-id violation as `ExternalIdTaken`."""
        try:
            return await self._append(stream_id, events, expected_version, idempotency, new_key)
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != _EXTERNAL_ID_SQLSTATE:
                raise
            placed = next((e for e in events if e.type == "OrderPlaced"), None)
            data = placed.data if placed is not None else {}
            existing = str(getattr(exc, "detail", "") or "")
            raise ExternalIdTaken(
                str(data.get("source") or ""), str(data.get("external_id") or ""), existing
            ) from None

    async def _append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion,
        idempotency: IdempotencyRequest | None,
        new_key: NewDataKey | None = None,
    ) -> AppendResult:
        prepared = prepare_append(
            stream_id,
            events,
            expected_version,
            idempotency,
            registry=self.registry,
            settings=self.settings,
            stream_pattern=self.stream_pattern,
        )
        fast = prepared.fast_args()
        if fast is not None:
            return await self._append_one(prepared, fast, expected_version, new_key)
        assert new_key is None, "a new data key goes only with the fast path"
        args = prepared.args()
        for _ in range(_ANY_RETRIES):
            try:
                row = await self._lanes.fetchrow(APPEND_SQL, *args)
            except asyncpg.UniqueViolationError:
                resolved = await self._resolve(prepared)
                if resolved is not None:
                    return resolved
                if prepared.expected >= 0:
                    raise ConcurrencyConflict(
                        stream_id, expected_version, await self.stream_version(stream_id)
                    ) from None
                continue  # ANY / STREAM_EXISTS lost a race for the next version: read again
            assert row is not None
            status = row["r_status"]
            if status == "appended":
                self._notifier.poke()
                return AppendResult(stream_id, row["r_version"], tuple(row["r_positions"]), row["r_tx"])
            if status == "replayed":
                return self._replay_idempotent(stream_id, row["r_outcome"])
            if status == "key_reused":
                assert idempotency is not None
                raise IdempotencyKeyReused(idempotency.client_id, idempotency.key)
            resolved = await self._resolve(prepared)
            if resolved is not None:
                return resolved
            raise ConcurrencyConflict(stream_id, expected_version, row["r_version"])
        raise ConcurrencyConflict(stream_id, expected_version, await self.stream_version(stream_id))

    async def _append_one(
        self,
        prepared: PreparedAppend,
        args: tuple[Any, ...],
        expected_version: int | ExpectedVersion,
        new_key: NewDataKey | None = None,
    ) -> AppendResult:
        """The fast path (`statements.APPEND_ONE_SQL`): one event at an exact version, no key;
        with `new_key`, `APPEND_ONE_KEY_SQL` (raises `_KeyLost` when the subject had a key)."""
        try:
            if new_key is None:
                row = await self._lanes.fetchrow(APPEND_ONE_SQL, *args)
            else:
                key_args = (new_key.key_id, new_key.subject, new_key.wrapped, new_key.kek_id)
                row = await self._lanes.fetchrow(APPEND_ONE_KEY_SQL, *args, *key_args)
                if row is not None and not row["key_won"]:
                    live_id = row["live_key_id"]
                    raise _KeyLost(None if live_id is None else (live_id, row["live_wrapped"]))
                if row is not None and row["position"] is None:
                    row = None  # the key is stored, the event is not: the stream moved on
        except asyncpg.UniqueViolationError:
            row = None  # lost the race for the version, or the event id exists
        if row is not None:
            self._notifier.poke()
            return AppendResult(prepared.stream_id, prepared.expected + 1, (row["position"],), row["tx"])
        resolved = await self._resolve(prepared)
        if resolved is not None:
            return resolved
        stream_id = prepared.stream_id
        raise ConcurrencyConflict(stream_id, expected_version, await self.stream_version(stream_id))

    @staticmethod
    def _replay_idempotent(stream_id: str, outcome: dict[str, Any]) -> AppendResult:
        version = outcome.get("version") if isinstance(outcome, dict) else None
        return AppendResult(
            stream_id,
            version if isinstance(version, int) else 0,
            (),
            None,
            replayed=True,
            outcome=outcome,
        )

    async def _resolve(self, prepared: PreparedAppend) -> AppendResult | None:
        """After a conflict: was this request (or these events) already committed?"""
        idem = prepared.idempotency
        if idem is not None:
            stored = await self.get_idempotency(idem.client_id, idem.key)
            if stored is not None:
                if stored.fingerprint != idem.fingerprint:
                    raise IdempotencyKeyReused(idem.client_id, idem.key)
                return self._replay_idempotent(prepared.stream_id, stored.outcome)
        rows = await self.pool.fetch(_EXISTING_SQL, prepared.event_ids)
        if not rows:
            return None
        by_id = {row["event_id"]: row for row in rows}
        for index, event_id in enumerate(prepared.event_ids):
            row = by_id.get(event_id)
            if row is None:
                raise DuplicateEventId(rows[0]["event_id"], "some events of this append exist, others do not")
            if row["stream_id"] != prepared.stream_id:
                raise DuplicateEventId(event_id, f"it belongs to stream {row['stream_id']!r}")
            same = (
                row["type"] == prepared.types[index]
                and row["schema_version"] == prepared.schema_versions[index]
                and row["data"] == orjson.loads(prepared.data[index])
            )
            if not same:
                raise DuplicateEventId(event_id, "the stored event has different content")
        return AppendResult(
            prepared.stream_id,
            max(row["version"] for row in rows),
            tuple(row["position"] for row in rows),
            rows[0]["tx"],
            replayed=True,
        )

    # -- idempotency ---------------------------------------------------------------------------

    async def get_idempotency(self, client_id: str, key: str) -> StoredIdempotency | None:
        """The stored outcome of a client's idempotency key, if any."""
        row = await self.pool.fetchrow(_IDEM_SQL, client_id, key)
        return None if row is None else StoredIdempotency(*row)

    async def claim_idempotency(
        self, client_id: str, key: str, claim_id: UUID, stale_after_s: float
    ) -> IdempotencyClaim:
        """The stored answer of a key, or an in-flight claim on it, in one statement.

        A claim older than `stale_after_s` (its holder died) is taken over; the in-flight table is
        UNLOGGED (migration 0022): a crash forgets claims, which is what a stale claim means anyway.
        """
        row = await self.pool.fetchrow(_CLAIM_SQL, client_id, key, claim_id, stale_after_s)
        assert row is not None
        return IdempotencyClaim(row["fingerprint"], row["outcome"], row["claim_id"] is not None)

    async def release_idempotency(self, client_id: str, key: str, claim_id: UUID) -> None:
        """Drop this caller's in-flight claim (a no-op if another caller took it over)."""
        await self.pool.execute(_RELEASE_SQL, client_id, key, claim_id)

    async def external_id_owner(self, source: str, external_id: str) -> str | None:
        """The stream that holds `(source, external_id)` (migration 0021's table), if any."""
        owner: str | None = await self.pool.fetchval(_EXTERNAL_SQL, source, external_id)
        return owner

    async def prune_idempotency(self, older_than: timedelta | None = None) -> int:
        """Delete keys older than `older_than` (default: `idempotency_ttl_hours`); returns the count."""
        age = older_than if older_than is not None else timedelta(hours=self.settings.idempotency_ttl_hours)
        status = await self.pool.execute(
            "DELETE FROM idempotency_keys WHERE created_at < clock_timestamp() - $1::interval", age
        )
        return int(status.split()[-1])

    # -- reads -----------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """A stream's events in version order (see `reads.read_stream`), decoded by the codec."""
        events = await reads.read_stream(self.pool, stream_id, from_version, to_version, as_of)
        return events if self.codec is None else await self.codec.decode(events)

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version; 0 when it does not exist."""
        return await reads.stream_version(self.pool, stream_id)

    async def read_all(
        self, after: Checkpoint = START, limit: int = 1000, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        """Events after `after` in the fenced global log (see `reads` for the fence)."""
        return await reads.read_all(self.pool, after, limit, types)

    def iter_all(
        self, after: Checkpoint = START, *, page_size: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Pages of the fenced log through a server-side cursor, for replays."""
        return reads.iter_all(self.pool, after, page_size=page_size, types=types)

    def iter_all_raw(
        self, after: Checkpoint = START, *, page_size: int = 10_000, types: Sequence[str] | None = None
    ) -> AsyncIterator[list[asyncpg.Record]]:
        """Like `iter_all` with raw records (data/metadata as JSON text): the fast replay path."""
        return reads.iter_all_records(self.pool, after, page_size=page_size, types=types, raw=True)

    async def read_events(self, **filters: Any) -> list[RecordedEvent]:
        """The audit feed (see `reads.read_events` for the filters)."""
        return await reads.read_events(self.pool, **filters)

    async def head(self) -> Checkpoint:
        """The checkpoint of the last event readable through the fence."""
        return await reads.head(self.pool)

    async def fence_status(self) -> FenceStatus:
        """Fence lag figures for metrics."""
        return await reads.fence_status(self.pool)

    async def events_after(self, after: Checkpoint) -> int:
        """Committed events after a checkpoint (a reader's lag)."""
        return await reads.events_after(self.pool, after)

    def decode(self, event: RecordedEvent) -> BaseModel:
        """The event as its registered model, upcast to the current schema version."""
        return self.registry.decode(event.type, event.schema_version, event.data)

    async def verify_stream(self, stream_id: str) -> ChainVerification:
        """Recompute the stream's hash chain."""
        return await verify_stream(self.pool, stream_id)

    # -- checkpoints -----------------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> Checkpoint | None:
        """A reader's saved checkpoint, or None."""
        return await load_checkpoint(self.pool, name)

    async def save_checkpoint(self, conn: Connection, name: str, checkpoint: Checkpoint) -> None:
        """Save a checkpoint on `conn`, inside the caller's transaction."""
        await save_checkpoint(conn, name, checkpoint)

    # -- subscriptions ---------------------------------------------------------------------------

    def subscribe(
        self,
        after: Checkpoint = START,
        *,
        batch_size: int = 1000,
        types: Sequence[str] | None = None,
        poll_interval_s: float | None = None,
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        """Batches of the fenced log from `after`, forever; never passes an open transaction.

        Woken by LISTEN on `ledger_events` (see `notify`), and polls every `poll_interval_s`
        (default from settings) so late or lost notifications only add latency. Holds one pool
        connection for the LISTEN; close the iterator (`contextlib.aclosing`) to release it.
        """
        return self._follow(
            reads.read_all,
            _event_checkpoint,
            after,
            batch_size=batch_size,
            types=types,
            poll_interval_s=poll_interval_s,
        )

    def subscribe_log(
        self,
        after: Checkpoint = START,
        *,
        batch_size: int = 1000,
        types: Sequence[str] | None = None,
        poll_interval_s: float | None = None,
    ) -> AsyncGenerator[list[asyncpg.Record], None]:
        """`subscribe` as records of `reads.LOG_COLUMNS` (JSON text, no hash chain): the relay's read."""
        return self._follow(
            reads.read_log,
            _row_checkpoint,
            after,
            batch_size=batch_size,
            types=types,
            poll_interval_s=poll_interval_s,
        )

    async def _follow(
        self,
        read: Callable[[Executor, Checkpoint, int, Sequence[str] | None], Awaitable[list[_Row]]],
        checkpoint_of: Callable[[_Row], Checkpoint],
        after: Checkpoint,
        *,
        batch_size: int,
        types: Sequence[str] | None,
        poll_interval_s: float | None,
    ) -> AsyncGenerator[list[_Row], None]:
        interval = self.settings.poll_interval_s if poll_interval_s is None else poll_interval_s
        wake = asyncio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        checkpoint = after
        async with self.pool.acquire() as listener:
            await listener.add_listener(CHANNEL, on_notify)
            try:
                while True:
                    wake.clear()
                    batch = await read(self.pool, checkpoint, batch_size, types)
                    if batch:
                        checkpoint = checkpoint_of(batch[-1])
                        yield batch
                        continue
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
                    # that lands as its timeout fires, and the closed subscriber polls forever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(interval):
                            await wake.wait()
            finally:
                await listener.remove_listener(CHANNEL, on_notify)


def _event_checkpoint(event: RecordedEvent) -> Checkpoint:
    return event.checkpoint


def _row_checkpoint(row: asyncpg.Record) -> Checkpoint:
    return Checkpoint(row["tx"], row["position"])

"""`InMemoryEventStore`: the `EventStoreProtocol` in plain Python objects, for unit tests.

It honours the contract of the PostgreSQL store (the contract suite runs on both): the same
input validation (`validation.prepare_append`), optimistic concurrency, event-id and
idempotency-key replays, in-flight claims, and migration 0021's external-id rule. Each method
runs without awaiting in between, so on one event loop every append is atomic, as one SQL
statement is. Not durable and not shared between processes: never a production store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from ledger.store.chain import event_hash
from ledger.store.errors import ConcurrencyConflict, DuplicateEventId, ExternalIdTaken, IdempotencyKeyReused
from ledger.store.event_types import EventRegistry
from ledger.store.records import (
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    FenceStatus,
    IdempotencyClaim,
    IdempotencyRequest,
    NewEvent,
    RecordedEvent,
    StoredIdempotency,
)
from ledger.store.validation import STREAM_ID_PATTERN, PreparedAppend, prepare_append
from ledger_kernel.settings import StoreSettings

__all__ = ["InMemoryEventStore"]

_ANY = int(ExpectedVersion.ANY)
_STREAM_EXISTS = int(ExpectedVersion.STREAM_EXISTS)


@dataclass(slots=True)
class _Claim:
    claim_id: UUID
    started: float


class InMemoryEventStore:
    """Streams, idempotency keys and external ids in dictionaries (see the module docstring)."""

    def __init__(
        self,
        registry: EventRegistry,
        settings: StoreSettings | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.settings = settings or StoreSettings()
        self._clock = clock
        self._monotonic = monotonic
        self._log: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[UUID, RecordedEvent] = {}
        self._keys: dict[tuple[str, str], StoredIdempotency] = {}
        self._inflight: dict[tuple[str, str], _Claim] = {}
        self._external: dict[tuple[str, str], str] = {}
        self._tx = 0

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- appends -------------------------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion,
        *,
        idempotency: IdempotencyRequest | None = None,
    ) -> AppendResult:
        """Append all or nothing, with the PostgreSQL store's outcomes and errors."""
        prepared = prepare_append(
            stream_id,
            events,
            expected_version,
            idempotency,
            registry=self.registry,
            settings=self.settings,
            stream_pattern=STREAM_ID_PATTERN,
        )
        if idempotency is not None:
            stored = self._keys.get((idempotency.client_id, idempotency.key))
            if stored is not None:
                if stored.fingerprint != idempotency.fingerprint:
                    raise IdempotencyKeyReused(idempotency.client_id, idempotency.key)
                return _replay_idempotent(stream_id, stored.outcome)
        stream = self._streams.get(stream_id, [])
        current = len(stream)
        expected = prepared.expected
        conflict = (expected >= 0 and current != expected) or (expected == _STREAM_EXISTS and current == 0)
        if conflict or any(event_id in self._by_id for event_id in prepared.event_ids):
            resolved = self._resolve(prepared)
            if resolved is not None:
                return resolved
            raise ConcurrencyConflict(stream_id, expected_version, current)
        self._check_external_ids(prepared)
        return self._write(prepared, stream, idempotency)

    def _check_external_ids(self, prepared: PreparedAppend) -> None:
        """Migration 0021's trigger: an `OrderPlaced` claims its `(source, external_id)`."""
        for type_name, text in zip(prepared.types, prepared.data, strict=True):
            if type_name != "OrderPlaced":
                continue
            data = orjson.loads(text)
            external = data.get("external_id") or None
            if external is None:
                continue
            source = data.get("source") or ""
            holder = self._external.get((source, external))
            if holder is not None and holder != prepared.stream_id:
                raise ExternalIdTaken(source, external, holder)

    def _write(
        self, prepared: PreparedAppend, stream: list[RecordedEvent], idempotency: IdempotencyRequest | None
    ) -> AppendResult:
        self._tx += 1
        now = self._clock()
        prev = stream[-1].hash if stream else None
        written: list[RecordedEvent] = []
        for index, event_id in enumerate(prepared.event_ids):
            version = len(stream) + index + 1
            type_name = prepared.types[index]
            schema_version = prepared.schema_versions[index]
            data_text, metadata_text = prepared.data[index], prepared.metadata[index]
            digest = event_hash(
                prev,
                stream_id=prepared.stream_id,
                version=version,
                event_id=event_id,
                type_name=type_name,
                schema_version=schema_version,
                data_text=data_text,
                metadata_text=metadata_text,
            )
            written.append(
                RecordedEvent(
                    len(self._log) + index + 1,
                    self._tx,
                    prepared.stream_id,
                    version,
                    event_id,
                    type_name,
                    schema_version,
                    orjson.loads(data_text),
                    orjson.loads(metadata_text),
                    now,
                    prev,
                    digest,
                )
            )
            prev = digest
        for event in written:
            if event.type == "OrderPlaced" and event.data.get("external_id"):
                self._external[(event.data.get("source") or "", event.data["external_id"])] = event.stream_id
            self._by_id[event.event_id] = event
        self._log.extend(written)
        self._streams[prepared.stream_id] = [*stream, *written]
        if idempotency is not None:
            key = (idempotency.client_id, idempotency.key)
            outcome = orjson.loads(orjson.dumps(dict(idempotency.outcome)))
            self._keys[key] = StoredIdempotency(
                idempotency.client_id,
                idempotency.key,
                idempotency.fingerprint,
                outcome,
                prepared.stream_id,
                now,
            )
        return AppendResult(
            prepared.stream_id, written[-1].version, tuple(e.position for e in written), self._tx
        )

    def _resolve(self, prepared: PreparedAppend) -> AppendResult | None:
        """As the PostgreSQL store's `_resolve`: were these events already committed?"""
        found = [self._by_id.get(event_id) for event_id in prepared.event_ids]
        rows = [row for row in found if row is not None]
        if not rows:
            return None
        for index, row in enumerate(found):
            event_id = prepared.event_ids[index]
            if row is None:
                raise DuplicateEventId(rows[0].event_id, "some events of this append exist, others do not")
            if row.stream_id != prepared.stream_id:
                raise DuplicateEventId(event_id, f"it belongs to stream {row.stream_id!r}")
            same = (
                row.type == prepared.types[index]
                and row.schema_version == prepared.schema_versions[index]
                and row.data == orjson.loads(prepared.data[index])
            )
            if not same:
                raise DuplicateEventId(event_id, "the stored event has different content")
        return AppendResult(
            prepared.stream_id,
            max(row.version for row in rows),
            tuple(row.position for row in rows),
            rows[0].tx,
            replayed=True,
        )

    # -- idempotency ---------------------------------------------------------------------------

    async def claim_idempotency(
        self, client_id: str, key: str, claim_id: UUID, stale_after_s: float
    ) -> IdempotencyClaim:
        """The stored answer of a key, or an in-flight claim (a stale one is taken over)."""
        stored = self._keys.get((client_id, key))
        if stored is not None:
            return IdempotencyClaim(stored.fingerprint, stored.outcome, False)
        now = self._monotonic()
        held = self._inflight.get((client_id, key))
        if held is not None and held.started >= now - stale_after_s:
            return IdempotencyClaim(None, None, False)
        self._inflight[(client_id, key)] = _Claim(claim_id, now)
        return IdempotencyClaim(None, None, True)

    async def release_idempotency(self, client_id: str, key: str, claim_id: UUID) -> None:
        """Drop this caller's claim (a no-op if another caller took it over)."""
        held = self._inflight.get((client_id, key))
        if held is not None and held.claim_id == claim_id:
            del self._inflight[(client_id, key)]

    async def get_idempotency(self, client_id: str, key: str) -> StoredIdempotency | None:
        """The stored outcome of a client's idempotency key, if any."""
        return self._keys.get((client_id, key))

    async def prune_idempotency(self, older_than: timedelta | None = None) -> int:
        """Delete keys older than `older_than` (default: `idempotency_ttl_hours`)."""
        age = older_than if older_than is not None else timedelta(hours=self.settings.idempotency_ttl_hours)
        cutoff = self._clock() - age
        old = [k for k, stored in self._keys.items() if stored.created_at < cutoff]
        for k in old:
            del self._keys[k]
        return len(old)

    async def external_id_owner(self, source: str, external_id: str) -> str | None:
        """The stream that holds `(source, external_id)`, if any."""
        return self._external.get((source, external_id))

    # -- reads -----------------------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """A stream's events in version order, optionally up to a version or a recorded time."""
        return [
            e
            for e in self._streams.get(stream_id, [])
            if e.version >= from_version
            and (to_version is None or e.version <= to_version)
            and (as_of is None or e.recorded_at <= as_of)
        ]

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version; 0 when it does not exist."""
        return len(self._streams.get(stream_id, []))

    async def read_events(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Sequence[str] | None = None,
        actor: str | None = None,
        source: str | None = None,
        stream_id: str | None = None,
        after: Checkpoint | None = None,
        limit: int = 100,
        **unknown: Any,
    ) -> list[RecordedEvent]:
        """The audit feed with `reads.read_events`' filters (every append is committed here)."""
        if unknown:
            raise TypeError(f"unknown filters: {', '.join(unknown)}")
        picked = [
            e
            for e in self._log
            if (after is None or e.checkpoint > after)
            and (since is None or e.recorded_at >= since)
            and (until is None or e.recorded_at < until)
            and (types is None or e.type in types)
            and (actor is None or e.metadata.get("actor") == actor)
            and (source is None or e.metadata.get("source") == source)
            and (stream_id is None or e.stream_id == stream_id)
        ]
        return picked[:limit]

    async def fence_status(self) -> FenceStatus:
        """No transaction is ever open between calls: nothing waits behind the fence."""
        return FenceStatus(self._tx + 1, 0, 0.0)


def _replay_idempotent(stream_id: str, outcome: dict[str, Any]) -> AppendResult:
    version = outcome.get("version")
    return AppendResult(
        stream_id, version if isinstance(version, int) else 0, (), None, replayed=True, outcome=outcome
    )

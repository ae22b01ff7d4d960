"""What the write side needs of an event store: the `EventStoreProtocol`.

The order service and the HTTP API are typed on this protocol, not on the PostgreSQL store, so
they run unchanged on `memory.InMemoryEventStore` in unit tests (the way python `eventsourcing`
pairs its PostgreSQL recorders with plain-object ones). Both implementations pass one contract
suite (`tests/contract/eventstore.py`): the in-memory store in `tests/unit`, PostgreSQL in
`tests/integration`. The PostgreSQL store (`store.EventStore`) offers more (the fenced global
log, subscriptions, checkpoints) for the relay and the projections, which use it directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from ledger.store.records import (
    AppendResult,
    ExpectedVersion,
    FenceStatus,
    IdempotencyClaim,
    IdempotencyRequest,
    NewEvent,
    RecordedEvent,
    StoredIdempotency,
)


class EventStoreProtocol(Protocol):
    """Streams with optimistic concurrency, idempotency keys and the external-id rule.

    Contract (each point is a test in the contract suite):
    - `append` writes all events or none at `expected_version` (an exact version, `NO_STREAM`,
      `ANY` or `STREAM_EXISTS`), else `ConcurrencyConflict`; re-appending the same event ids with
      the same content is a replay (`replayed=True`), with other content `DuplicateEventId`;
    - with an `IdempotencyRequest` the outcome is stored with the events; a repeat with the same
      fingerprint replays it, with another fingerprint raises `IdempotencyKeyReused`;
    - an `OrderPlaced` whose `(source, external_id)` another stream holds raises `ExternalIdTaken`;
    - `claim_idempotency` marks a key in flight until `release_idempotency` (or until the claim
      is older than `stale_after_s`), or returns the stored answer.
    """

    async def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int | ExpectedVersion,
        *,
        idempotency: IdempotencyRequest | None = None,
    ) -> AppendResult:
        """Append `events` to a stream, all or nothing (see the class docstring)."""
        ...

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """A stream's events in version order, optionally up to a version or a recorded time."""
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version; 0 when it does not exist."""
        ...

    async def claim_idempotency(
        self, client_id: str, key: str, claim_id: UUID, stale_after_s: float
    ) -> IdempotencyClaim:
        """The stored answer of a key, or an in-flight claim on it (see `IdempotencyClaim`)."""
        ...

    async def release_idempotency(self, client_id: str, key: str, claim_id: UUID) -> None:
        """Drop this caller's in-flight claim (a no-op if another caller took it over)."""
        ...

    async def get_idempotency(self, client_id: str, key: str) -> StoredIdempotency | None:
        """The stored outcome of a client's idempotency key, if any."""
        ...

    async def prune_idempotency(self, older_than: timedelta | None = None) -> int:
        """Delete keys older than `older_than` (default: the configured TTL); returns the count."""
        ...

    async def external_id_owner(self, source: str, external_id: str) -> str | None:
        """The stream that holds `(source, external_id)`, if any."""
        ...

    async def read_events(self, **filters: Any) -> list[RecordedEvent]:
        """The audit feed (filters as `reads.read_events`)."""
        ...

    async def fence_status(self) -> FenceStatus:
        """Fence lag figures for metrics."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds (not the pool, which belongs to the caller)."""
        ...

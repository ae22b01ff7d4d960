"""Exceptions raised by the event store.

Every error the store raises derives from `StoreError`, so adapters can map the whole family
(HTTP problem types, Kafka rejections) in one place. Input errors (`InvalidInput` and its
children) are raised before anything is sent to PostgreSQL, so nothing is ever half-written.
"""

from __future__ import annotations

from uuid import UUID


class StoreError(Exception):
    """Base class of every event-store error."""


class ConcurrencyConflict(StoreError):
    """The stream's version did not match `expected_version` (HTTP 409)."""

    def __init__(self, stream_id: str, expected: object, current_version: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.current_version = current_version
        super().__init__(
            f"stream {stream_id!r}: expected version {expected}, current version is {current_version}"
        )


class ExternalIdTaken(StoreError):
    """An `OrderPlaced` names a `(source, external_id)` another stream already holds.

    Raised by the append that would break the rule (migration 0021's trigger in PostgreSQL, the
    same check in the in-memory store); `existing_stream_id` is the stream that holds it.
    """

    def __init__(self, source: str, external_id: str, existing_stream_id: str) -> None:
        super().__init__(
            f"external_id {external_id!r} of source {source!r} already belongs to {existing_stream_id}"
        )
        self.source = source
        self.external_id = external_id
        self.existing_stream_id = existing_stream_id


class IdempotencyKeyReused(StoreError):
    """The idempotency key was already used by this client for a different request (HTTP 422)."""

    def __init__(self, client_id: str, key: str) -> None:
        self.client_id = client_id
        self.key = key
        super().__init__(f"idempotency key {key!r} of client {client_id!r} was used for a different request")


class DuplicateEventId(StoreError):
    """An event id already exists with different content or in another stream."""

    def __init__(self, event_id: UUID, reason: str) -> None:
        self.event_id = event_id
        super().__init__(f"event id {event_id} already exists: {reason}")


class InvalidInput(StoreError, ValueError):
    """The append request is malformed; raised before any database work."""


class InvalidStreamId(InvalidInput):
    """The stream id does not match the store's stream id pattern."""


class InvalidEventId(InvalidInput):
    """An event id is not a UUID, or is repeated within one append."""


class UnknownEventType(InvalidInput):
    """The event type is not registered in the store's `EventRegistry`."""


class InvalidEventData(InvalidInput):
    """Event data or metadata cannot be stored (not a JSON object, NUL character, bad schema version...)."""


class EventTooLarge(InvalidInput):
    """An event's serialized data plus metadata exceeds `max_event_bytes`."""


class InvalidAppend(InvalidInput):
    """The append as a whole is malformed (no events, too many events, bad expected version)."""


class MigrationError(StoreError):
    """A migration file is malformed or failed to apply."""


class MigrationChecksumMismatch(MigrationError):
    """An already-applied migration file was edited afterwards; migrations are immutable."""

    def __init__(self, version: int, name: str, recorded: str, actual: str) -> None:
        self.version = version
        self.name = name
        super().__init__(
            f"migration {version:04d} ({name}) was applied with checksum {recorded[:12]}… but the file now "
            f"has {actual[:12]}…; applied migrations must not change: add a new migration instead"
        )


class XidHorizonError(StoreError):
    """Stored `tx` values are ahead of the cluster's transaction ids (see `reads.check_xid_horizon`)."""

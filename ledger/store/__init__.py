"""PostgreSQL event store (asyncpg): migrations, appends, fenced global log, subscriptions.

Generic: knows nothing of orders (the composition root registers the domain's event models in
an `EventRegistry`). Choices, each explained where it lives:
- one round trip per append: the `ledger_append` SQL function (migration 0005) reads the
  stream version before writing anything, so per stream (tx, position) order is version order;
- the global log is read through the xid8 fence (`reads`), never by position alone;
- no NOTIFY inside appends: a debounced notifier after commit plus polling (`notify`);
- idempotency keys and the per-stream hash chain are written in the append transaction
  (`store`, `chain`); bad input is refused before any database work (`validation`).
"""

from ledger.store.chain import event_hash, verify_stream
from ledger.store.errors import (
    ConcurrencyConflict,
    DuplicateEventId,
    EventTooLarge,
    ExternalIdTaken,
    IdempotencyKeyReused,
    InvalidAppend,
    InvalidEventData,
    InvalidEventId,
    InvalidInput,
    InvalidStreamId,
    MigrationChecksumMismatch,
    MigrationError,
    StoreError,
    UnknownEventType,
    XidHorizonError,
)
from ledger.store.event_types import EventRegistry
from ledger.store.memory import InMemoryEventStore
from ledger.store.migrate import migrate, pending_migrations
from ledger.store.pool import create_pool
from ledger.store.protocol import EventStoreProtocol
from ledger.store.reads import check_xid_horizon
from ledger.store.records import (
    ANY,
    NO_STREAM,
    START,
    STREAM_EXISTS,
    AppendResult,
    ChainVerification,
    Checkpoint,
    Connection,
    Encoded,
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
    uuid7,
)
from ledger.store.store import EventStore, load_checkpoint, save_checkpoint

__all__ = [
    "ANY",
    "NO_STREAM",
    "START",
    "STREAM_EXISTS",
    "AppendResult",
    "ChainVerification",
    "Checkpoint",
    "ConcurrencyConflict",
    "Connection",
    "DuplicateEventId",
    "Encoded",
    "EventCodec",
    "EventRegistry",
    "EventStore",
    "EventStoreProtocol",
    "EventTooLarge",
    "Executor",
    "ExpectedVersion",
    "ExternalIdTaken",
    "FenceStatus",
    "IdempotencyClaim",
    "IdempotencyKeyReused",
    "IdempotencyRequest",
    "InMemoryEventStore",
    "InvalidAppend",
    "InvalidEventData",
    "InvalidEventId",
    "InvalidInput",
    "InvalidStreamId",
    "MigrationChecksumMismatch",
    "MigrationError",
    "NewDataKey",
    "NewEvent",
    "RecordedEvent",
    "StoreError",
    "StoredIdempotency",
    "UnknownEventType",
    "XidHorizonError",
    "check_xid_horizon",
    "create_pool",
    "event_hash",
    "load_checkpoint",
    "migrate",
    "pending_migrations",
    "save_checkpoint",
    "uuid7",
    "verify_stream",
]

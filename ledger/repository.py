"""Loading an order: read its stream, decode each event, fold: the one path every reader uses.

`apply` is the fold step of every reader of the log (the service, the relay's fold cache, the
projections' runner, bulk load and verification, the audit CLI, the fan-out's operations): one
stored event, decoded, evolving an order. On top of it:

- `load(reader, order_id, to_version= | as_of=)` and `load_many` read through anything with the
  event store's `read_stream` (`EventStoreProtocol`: both stores; `ConnectionReader` over a
  plain asyncpg connection or pool, for the CLIs and the fan-out's operations);
- `fold_steps` gives the state after each event (a replay that needs every intermediate order);
- `fold_rows` folds raw rows of one stream, and `fold_prefixes` catches up, in one query, the
  orders a fold cache does not hold (the relay's and the projections' caches both do).

Decoding is trusted: events were validated against their model when they were appended, so
stored JSON of the current schema version goes straight to the model's own Rust JSON validator
(no union dispatch, no Python-level parsing; `DECODERS`); other versions are upcast first
(`ledger.domain.decode_event`). Measured against the alternatives, per event of a simulated
history: the Rust validator 3.0 us, `orjson.loads` alone 1.0 us, orjson plus building the
models without validation (`model_construct`-style, nested models and all) 6.0 us: building
pydantic models from Python costs more than pydantic validating JSON in Rust, so this is the
cheap decode (a property test proves it folds as full validation does, old versions included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from ledger.domain.events import OrderEvent, current_json_decoders, decode_event
from ledger.domain.state import Order, evolve
from ledger.store import Executor, RecordedEvent
from ledger.store.reads import read_prefixes, read_stream
from ledger_kernel.wire.streams import stream_id_of

__all__ = [
    "DECODERS",
    "ConnectionReader",
    "FoldFailure",
    "StreamReader",
    "apply",
    "decode",
    "fold_events",
    "fold_prefixes",
    "fold_rows",
    "fold_steps",
    "load",
    "load_many",
]

#: `type -> (current schema version, JSON text -> event)`: the trusted decoders, for loops that
#: fold millions of events and inline `apply` (the relay, the bulk load); anything they do not
#: cover goes through `decode`.
DECODERS: Mapping[str, tuple[int, Callable[[str | bytes], OrderEvent]]] = current_json_decoders()


def decode(type_: str, schema_version: int, data: str | bytes | dict[str, Any]) -> OrderEvent:
    """One stored event as its model (trusted: validated on append), upcast to its current shape."""
    fast = DECODERS.get(type_)
    if fast is not None and fast[0] == schema_version and not isinstance(data, dict):
        return fast[1](data)
    return decode_event(type_, data, schema_version=schema_version)


def apply(  # noqa: PLR0917 - the hot path of every replay: positional arguments are the cheapest call
    state: Order | None,
    type_: str,
    schema_version: int,
    data: str | bytes | dict[str, Any],
    version: int,
    recorded_at: datetime,
) -> Order:
    """The fold step: `state` (None before the first event) after one stored event."""
    fast = DECODERS.get(type_)
    if fast is not None and fast[0] == schema_version and not isinstance(data, dict):
        event = fast[1](data)
    else:
        event = decode_event(type_, data, schema_version=schema_version)
    return evolve(state, event, version=version, recorded_at=recorded_at)


class StreamReader(Protocol):
    """What loading needs: a stream's events in version order, up to a version or a time."""

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """A stream's events in version order."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectionReader:
    """A `StreamReader` over an asyncpg connection or pool (the store's own read query)."""

    db: Executor

    async def read_stream(
        self,
        stream_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """See `ledger.store.reads.read_stream`."""
        return await read_stream(self.db, stream_id, from_version, to_version, as_of)


def fold_steps(rows: Iterable[RecordedEvent]) -> Iterator[tuple[RecordedEvent, Order]]:
    """Each stored event with the order after it."""
    state: Order | None = None
    for row in rows:
        state = apply(state, row.type, row.schema_version, row.data, row.version, row.recorded_at)
        yield row, state


def fold_events(rows: Iterable[RecordedEvent]) -> Order | None:
    """The order after `rows` (None when there are none)."""
    state: Order | None = None
    for _, state in fold_steps(rows):  # noqa: B007 - the last state is the answer
        pass
    return state


def fold_rows(rows: Iterable[Sequence[Any]], state: Order | None = None) -> Order | None:
    """Fold raw rows `(stream_id, version, type, schema_version, data, recorded_at)` of one stream."""
    for row in rows:
        state = apply(state, row[2], row[3], row[4], row[1], row[5])
    return state


class FoldFailure(NamedTuple):
    """A stream that could not be folded: the version of the event that failed, and why."""

    version: int
    error: Exception


async def fold_prefixes(
    db: Executor, upto: Mapping[str, int]
) -> tuple[dict[str, Order], dict[str, FoldFailure]]:
    """Several orders folded from their first event up to the version in `upto`, in one query.

    For fold caches catching up on orders they do not hold (a restart, an eviction). An order
    whose events cannot be decoded or folded (a domain bug: they were validated on append) is
    returned as a `FoldFailure` instead of stopping the others; an order with no events at all
    is in neither result.
    """
    states: dict[str, Order] = {}
    failed: dict[str, FoldFailure] = {}
    if not upto:
        return states, failed
    for sid, version, type_, schema_version, data, recorded_at in await read_prefixes(db, upto):
        if sid in failed:
            continue
        try:
            states[sid] = apply(states.get(sid), type_, schema_version, data, version, recorded_at)
        except Exception as exc:  # one order's bad event must not stop the others
            states.pop(sid, None)
            failed[sid] = FoldFailure(version, exc)
    return states, failed


async def load(
    reader: StreamReader, order_id: UUID, *, to_version: int | None = None, as_of: datetime | None = None
) -> Order | None:
    """The folded order (optionally as of a version or a recorded time), or None if it has no events."""
    return fold_events(await reader.read_stream(stream_id_of(order_id), 1, to_version, as_of))


async def load_many(reader: StreamReader, order_ids: Sequence[UUID]) -> dict[UUID, Order | None]:
    """Several orders, each as `load` gives it."""
    return {order_id: await load(reader, order_id) for order_id in order_ids}

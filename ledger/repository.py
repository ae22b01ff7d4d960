"""Loading an order: read its stream, decode each event, fold: the one path for whole orders.

`load(reader, order_id, to_version= | as_of=)` and `load_many` read through anything with the
event store's `read_stream` (`EventStoreProtocol`: both stores; `ConnectionReader` over a plain
asyncpg connection or pool, for the CLIs and the fan-out's operations); `fold_steps` gives the
state after each event (a replay that needs every intermediate order). Decoding upcasts stored
events to their current shape (`ledger.domain.decode_event`).

Not (yet) on this path, on purpose: the relay's fold cache (`ledger.relay.foldcache`) and the
projections' bulk rebuild fold raw log pages with measured fast paths of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from ledger.domain.events import decode_event
from ledger.domain.state import Order, evolve
from ledger.store import Executor, RecordedEvent
from ledger.store.reads import read_stream
from ledger_kernel.wire.streams import stream_id_of

__all__ = ["ConnectionReader", "StreamReader", "fold_events", "fold_steps", "load", "load_many"]


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
        event = decode_event(row.type, row.data, schema_version=row.schema_version)
        state = evolve(state, event, version=row.version, recorded_at=row.recorded_at)
        yield row, state


def fold_events(rows: Iterable[RecordedEvent]) -> Order | None:
    """The order after `rows` (None when there are none)."""
    state: Order | None = None
    for _, state in fold_steps(rows):  # noqa: B007 - the last state is the answer
        pass
    return state


async def load(
    reader: StreamReader, order_id: UUID, *, to_version: int | None = None, as_of: datetime | None = None
) -> Order | None:
    """The folded order (optionally as of a version or a recorded time), or None if it has no events."""
    return fold_events(await reader.read_stream(stream_id_of(order_id), 1, to_version, as_of))


async def load_many(reader: StreamReader, order_ids: Sequence[UUID]) -> dict[UUID, Order | None]:
    """Several orders, each as `load` gives it."""
    return {order_id: await load(reader, order_id) for order_id in order_ids}

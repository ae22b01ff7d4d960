"""What a fan-out worker reads (the `orders.events` envelope) and what a mapping returns (calls).

Why a parsed envelope with the domain `Order`: mappings are pure functions of the event and
the order state after it (docs/architecture.md#kafka: event-carried state), so workers need no database read to
map, and replay can build the same value from the Postgres log (`from_order`).
Why `DestinationCall` is data: the worker executes the list and tests assert on it; the mapper
never does I/O. The envelope's wire model (fields, build, parse) is the kernel's
`ledger_kernel.wire.envelope.EventEnvelope`; this module holds only the mappings' types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ledger.domain.state import Order
from ledger.domain.views import JSON_MONEY, order_from_json, order_to_json
from ledger_kernel.wire.envelope import EnvelopeError, EventEnvelope, build_envelope
from ledger_kernel.wire.streams import stream_id_of

__all__ = ["REMOTE_ID", "CallKind", "DestinationCall", "Envelope", "EnvelopeError"]

REMOTE_ID = "{remote_id}"
"""Placeholder for the destination's id of the order (Omneo's numeric id), filled in by the worker
from delivery state or from the create call made just before (paths and body values)."""

CallKind = Literal[
    "omneo.order.create",
    "omneo.order.update",
    "omneo.order.delete",
    "omneo.transaction.upsert",
    "omnisend.category.create",
    "omnisend.order.create",
    "omnisend.order.replace",
    "omnisend.order.patch",
    "omnisend.order.delete",
    "omnisend.event",
]


@dataclass(frozen=True, slots=True)
class DestinationCall:
    """One HTTP call to a destination.

    `key` is the idempotency/dedupe key (Omneo transaction external_id, Omnisend orderID or
    eventID). `remember` holds digests the worker stores in delivery state once the call
    succeeded, so an unchanged record is not re-sent. `notes` record lossy mapping decisions (F22).
    `create_body` is the whole record for an update call, to create it again if the destination
    lost it (Omnisend PUT/PATCH 404), since a PATCH body alone cannot create an order.
    `dropped` names the fields the mapper left out because their value could not be sent as the
    destination requires (e.g. a phone that is not E.164): the worker counts them in a metric.
    """

    kind: CallKind
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    body: dict[str, Any] | None
    key: str
    remember: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default=())
    create_body: dict[str, Any] | None = None
    dropped: tuple[str, ...] = field(default=())

    @property
    def needs_remote_id(self) -> bool:
        """True when the path or body refers to the order's remote id."""
        return REMOTE_ID in self.path or (self.body is not None and REMOTE_ID in self.body.values())


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event with the order state after it (the domain `Order`, rebuilt from the view)."""

    event_id: str
    order_id: str
    version: int
    position: int
    type: str
    data: dict[str, Any]
    recorded_at: datetime
    order: Order
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The data's schema version (the event type's current one: the relay upcasts).
    schema_version: int = 1

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        """Parse a Kafka value (`ledger_kernel.wire.envelope`); raises EnvelopeError for anything unreadable."""
        return cls._of(EventEnvelope.parse(raw))

    @classmethod
    def from_json(cls, obj: Any) -> Envelope:
        """Parse a decoded envelope; the `order` view goes through `ledger.domain.order_from_json`."""
        return cls._of(EventEnvelope.from_json(obj))

    @classmethod
    def _of(cls, wire: EventEnvelope) -> Envelope:
        try:
            return cls(
                event_id=str(wire.event_id),
                order_id=str(wire.order_id),
                version=wire.version,
                position=wire.position,
                type=wire.type,
                data=wire.data,
                recorded_at=wire.recorded_at_time(),
                order=order_from_json(wire.order),
                metadata=wire.metadata,
                schema_version=wire.schema_version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvelopeError(f"bad envelope: {type(exc).__name__}: {exc}") from exc

    @property
    def stream_id(self) -> str:
        """The order's stream (the kernel's stream-id rule)."""
        return stream_id_of(self.order_id)

    def to_bytes(self) -> bytes:
        """The envelope as the relay writes it (same keys, same order), so a replayed event can be
        parked and redriven."""
        return build_envelope(
            event_id=self.event_id,
            order_id=self.order_id,
            stream_id=self.stream_id,
            version=self.version,
            position=self.position,
            type_=self.type,
            schema_version=self.schema_version,
            data=self.data,
            metadata=self.metadata,
            recorded_at=self.recorded_at,
            order=order_to_json(self.order, money=JSON_MONEY),
        )

    @classmethod
    def from_order(
        cls,
        *,
        event_id: str,
        version: int,
        position: int,
        type_: str,
        recorded_at: datetime,
        order: Order,
        schema_version: int = 1,
    ) -> Envelope:
        """An envelope rebuilt from the store (replay): same shape, no JSON round trip."""
        return cls(
            event_id, str(order.id), version, position, type_, {}, recorded_at, order, {}, schema_version
        )

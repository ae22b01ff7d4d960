"""Order events (past tense), their codec for the store, and upcasters for old schema versions.

Stored rows keep ``type`` and ``schema_version`` in their own columns; ``data`` never contains
``type`` (docs/CONTRACTS.md). :func:`event_data` produces that ``data`` and :func:`decode_event`
reads it back. Events are validated once, on append (they come out of ``decide``); replays of
trusted rows use :func:`decode_event`, which goes straight to the per-type model's Rust JSON
validator (no union dispatch, no Python-level parsing).

Evolving a shape: bump the model's ``schema_version``, keep the old shape's fields documented
in an upcaster registered in :data:`UPCASTERS` under ``(type, old_version)`` that returns the
dict of the next version, and add an old-version sample to ``tests/unit/domain/fixtures``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ledger.domain.values import Amounts, LineItem, OrderDetails, QuantityLine

__all__ = [
    "EVENT_TYPES",
    "UPCASTERS",
    "EventDecodeError",
    "ItemsRestocked",
    "OrderCanceled",
    "OrderDeleted",
    "OrderDetailsChanged",
    "OrderEvent",
    "OrderLinesChanged",
    "OrderPlaced",
    "OrderStatusChanged",
    "PaymentAuthorized",
    "PaymentCaptured",
    "PaymentRefunded",
    "PaymentVoided",
    "PersonalDataErased",
    "ShipmentDelivered",
    "ShipmentDispatched",
    "decode_event",
    "event_data",
    "schema_version_of",
    "upcast",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: ClassVar[int] = 1


class OrderPlaced(_Event):
    """A new order. ``placed_at`` is the producer's time (or the ledger's when not given)."""

    type: Literal["OrderPlaced"] = "OrderPlaced"
    order_id: UUID
    external_id: str | None = None
    source: str | None = None
    currency: str
    status: str
    details: OrderDetails = OrderDetails()
    lines: tuple[LineItem, ...]
    amounts: Amounts
    placed_at: datetime


class OrderDetailsChanged(_Event):
    """The full new details; ``changed`` names the detail fields that differ (for audit and mappers)."""

    type: Literal["OrderDetailsChanged"] = "OrderDetailsChanged"
    details: OrderDetails
    changed: tuple[str, ...]


class OrderLinesChanged(_Event):
    """The full new list of lines and the amounts that go with it (replace, not a delta)."""

    type: Literal["OrderLinesChanged"] = "OrderLinesChanged"
    lines: tuple[LineItem, ...]
    amounts: Amounts


class OrderStatusChanged(_Event):
    """The producer's own free-text status (Omneo ``status``), e.g. pending -> processing."""

    type: Literal["OrderStatusChanged"] = "OrderStatusChanged"
    status: str


class _Payment(_Event):
    amount: int
    method: str | None = None
    reference: str | None = None


class PaymentAuthorized(_Payment):
    type: Literal["PaymentAuthorized"] = "PaymentAuthorized"


class PaymentCaptured(_Payment):
    type: Literal["PaymentCaptured"] = "PaymentCaptured"


class PaymentRefunded(_Payment):
    type: Literal["PaymentRefunded"] = "PaymentRefunded"


class PaymentVoided(_Payment):
    """An authorisation (or part of it) released without capture."""

    type: Literal["PaymentVoided"] = "PaymentVoided"


class ShipmentDispatched(_Event):
    """Some lines left a location. v2 split v1's single ``tracking`` into code and url."""

    schema_version: ClassVar[int] = 2
    type: Literal["ShipmentDispatched"] = "ShipmentDispatched"
    shipment_id: str
    lines: tuple[QuantityLine, ...]
    carrier: str | None = None
    tracking_code: str | None = None
    tracking_url: str | None = None
    location_id: str | None = None
    dispatched_at: datetime


class ShipmentDelivered(_Event):
    type: Literal["ShipmentDelivered"] = "ShipmentDelivered"
    shipment_id: str
    delivered_at: datetime


class ItemsRestocked(_Event):
    """Quantities put back into stock (returned after shipping, or released after a cancel)."""

    type: Literal["ItemsRestocked"] = "ItemsRestocked"
    lines: tuple[QuantityLine, ...]
    location_id: str | None = None
    reason: str | None = None


class OrderCanceled(_Event):
    type: Literal["OrderCanceled"] = "OrderCanceled"
    reason: str | None = None
    canceled_at: datetime


class OrderDeleted(_Event):
    """A tombstone: the order is gone for readers, its history stays for audit."""

    type: Literal["OrderDeleted"] = "OrderDeleted"
    reason: str | None = None


class PersonalDataErased(_Event):
    """The order's personal data was erased: its data subject's key was destroyed
    (docs/privacy.md). Who asked, on what basis, when; no personal data. Folds as a touch: the
    order's amounts, lines, payments and Transactions are unchanged."""

    type: Literal["PersonalDataErased"] = "PersonalDataErased"
    erasure_id: UUID
    requested_by: str
    basis: str
    erased_at: datetime


OrderEvent = Annotated[
    OrderPlaced
    | OrderDetailsChanged
    | OrderLinesChanged
    | OrderStatusChanged
    | PaymentAuthorized
    | PaymentCaptured
    | PaymentRefunded
    | PaymentVoided
    | ShipmentDispatched
    | ShipmentDelivered
    | ItemsRestocked
    | OrderCanceled
    | OrderDeleted
    | PersonalDataErased,
    Field(discriminator="type"),
]

_ALL: tuple[type[_Event], ...] = (
    OrderPlaced,
    OrderDetailsChanged,
    OrderLinesChanged,
    OrderStatusChanged,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentRefunded,
    PaymentVoided,
    ShipmentDispatched,
    ShipmentDelivered,
    ItemsRestocked,
    OrderCanceled,
    OrderDeleted,
    PersonalDataErased,
)

_BY_TYPE: dict[str, type[_Event]] = {cls.model_fields["type"].default: cls for cls in _ALL}
EVENT_TYPES: dict[str, type[BaseModel]] = dict(_BY_TYPE)
# The Rust validators themselves: model_validate_json adds a Python wrapper per call.
_JSON_DECODERS: dict[str, Callable[[str | bytes], Any]] = {
    t: c.__pydantic_validator__.validate_json for t, c in _BY_TYPE.items()
}
_CURRENT: dict[str, int] = {t: c.schema_version for t, c in _BY_TYPE.items()}


def _shipment_dispatched_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 had one free-text ``tracking``: a URL became ``tracking_url``, anything else the code."""
    out = {k: v for k, v in data.items() if k != "tracking"}
    tracking = data.get("tracking")
    is_url = isinstance(tracking, str) and tracking.lower().startswith(("https://", "http://"))
    out["tracking_url"] = tracking if is_url else None
    out["tracking_code"] = None if is_url else tracking
    return out


UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("ShipmentDispatched", 1): _shipment_dispatched_v1_to_v2,
}


class EventDecodeError(ValueError):
    """A stored event that cannot be read: unknown type or a version with no upcaster path."""


def upcast(type_: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Apply upcasters until ``data`` has the current shape of ``type_``."""
    cls = _BY_TYPE.get(type_)
    if cls is None:
        raise EventDecodeError(f"unknown event type {type_!r}")
    current = cls.schema_version
    if schema_version > current:
        raise EventDecodeError(f"{type_} v{schema_version} is newer than this code (v{current})")
    while schema_version < current:
        step = UPCASTERS.get((type_, schema_version))
        if step is None:
            raise EventDecodeError(f"no upcaster for {type_} v{schema_version}")
        data = step(data)
        schema_version += 1
    return data


def decode_event(
    type_: str, data: str | bytes | dict[str, Any], /, *, schema_version: int | None = None
) -> OrderEvent:
    """Decode one stored event (trusted: validated on append) into its model, upcasting old versions.

    JSON text of the current version goes straight to ``Model.model_validate_json`` (Rust).
    ``schema_version=None`` means current.
    """
    if not isinstance(data, dict) and (schema_version is None or schema_version == _CURRENT.get(type_)):
        decoder = _JSON_DECODERS.get(type_)  # the hot path of every replay
        if decoder is not None:
            return decoder(data)  # type: ignore[no-any-return]
    cls = _BY_TYPE.get(type_)
    if cls is None:
        raise EventDecodeError(f"unknown event type {type_!r}")
    if schema_version is not None and schema_version != cls.schema_version:
        obj = json.loads(data) if isinstance(data, str | bytes) else data
        data = upcast(type_, schema_version, obj)
    event = cls.model_validate(data) if isinstance(data, dict) else cls.model_validate_json(data)
    return event  # type: ignore[return-value]


def current_json_decoders() -> dict[str, tuple[int, Callable[[str | bytes], OrderEvent]]]:
    """`type -> (current schema version, JSON decoder)`: what `decode_event` does for stored JSON
    of the current version, for loops that decode millions of events (a bulk rebuild) and save
    its per-call dispatch; anything else still goes through `decode_event`."""
    return {t: (_CURRENT[t], decoder) for t, decoder in _JSON_DECODERS.items()}


def schema_version_of(event: OrderEvent) -> int:
    """The schema version to store with ``event`` (its class's current version)."""
    return event.schema_version


def event_data(event: BaseModel) -> dict[str, Any]:
    """The JSON-ready ``data`` column for an event: every field except ``type``."""
    return event.model_dump(mode="json", exclude={"type"})

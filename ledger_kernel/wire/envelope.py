"""The `orders.events` envelope, written once: its fields, its build, its parse.

The relay builds it (`ledger.relay.message`, through `encode_envelope`), the AsyncAPI document
describes it (`ledger.intake.app` publishes `EventEnvelope` as the topic's schema) and the
fan-out workers parse it (`consumers.fanout.mapping_types`, through `EventEnvelope.parse`). Before,
each of the three spelled the fields itself, and the fan-out's re-encoding of a parked event
had lost `stream_id` and `schema_version`. See docs/architecture.md#kafka for the contract.

Bytes are deterministic (a re-published event gives the same bytes): keys in `ENVELOPE_KEYS`
order, `data`, `metadata` and `order` as canonical JSON (sorted keys, exact decimals), datetimes
ISO 8601 with their offset.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, Field, ValidationError, model_validator

from ledger_kernel.wire.codec import dumps_canonical
from ledger_kernel.wire.streams import stream_id_of

__all__ = ["ENVELOPE_KEYS", "EnvelopeError", "EventEnvelope", "build_envelope", "encode_envelope"]


class EnvelopeError(ValueError):
    """Bytes that are not a readable envelope (a consumer parks them as poison, never retries)."""


class EventEnvelope(BaseModel):
    """One appended event on `orders.events` (key = order id), published by the relay."""

    event_id: UUID
    order_id: UUID
    stream_id: str = Field(description="order-<uuid>")
    version: int = Field(description="Per-order version, 1, 2, 3...")
    position: int = Field(description="Global log position")
    type: str = Field(description="Event type, e.g. OrderPlaced")
    schema_version: int
    data: dict[str, Any] = Field(description="Event data (money in integer minor units)")
    metadata: dict[str, Any] = Field(
        description="actor, client_id, source, correlation_id, causation_id, idempotency_key, request_id"
    )
    recorded_at: str
    order: dict[str, Any] = Field(
        description="The order's JSON view after the event (as the HTTP API returns it)"
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_keys_of_old_parked_envelopes(cls, obj: Any) -> Any:
        """The fan-out parked (and may redrive) envelopes it had re-encoded without `stream_id`
        and `schema_version`: read them with the values the relay would have written."""
        if isinstance(obj, dict) and ("stream_id" not in obj or "schema_version" not in obj):
            obj = {"stream_id": stream_id_of(str(obj.get("order_id"))), "schema_version": 1, **obj}
        return obj

    @classmethod
    def parse(cls, raw: bytes) -> EventEnvelope:
        """Read a Kafka value with exact decimals (the order view's money must convert back
        exactly); raises `EnvelopeError` for anything that is not an envelope."""
        try:
            obj = json.loads(raw, parse_float=Decimal)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EnvelopeError(f"not JSON: {exc}") from exc
        return cls.from_json(obj)

    @classmethod
    def from_json(cls, obj: Any) -> EventEnvelope:
        """Validate a decoded envelope (values under `data`, `metadata`, `order` are kept as decoded)."""
        if not isinstance(obj, dict):
            raise EnvelopeError("an envelope is a JSON object")
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise EnvelopeError(
                f"bad envelope: {exc.error_count()} error(s): {exc.errors()[0]['msg']}"
            ) from exc

    def recorded_at_time(self) -> datetime:
        """`recorded_at` as an aware datetime."""
        return datetime.fromisoformat(self.recorded_at)


#: The envelope's keys, in the order they are written.
ENVELOPE_KEYS = tuple(EventEnvelope.model_fields)


def encode_envelope(  # noqa: PLR0917 - positional: the relay calls it once per event
    event_id: str,
    order_id: str | None,
    stream_id: str,
    version: int,
    position: int,
    type_: str,
    schema_version: int,
    data: orjson.Fragment,
    metadata: orjson.Fragment,
    recorded_at: datetime,
    order: orjson.Fragment | None,
) -> bytes:
    """The envelope's bytes from values already canonical (`data`, `metadata`, `order` as
    `orjson.Fragment`s of `dumps_canonical` output): the relay's per-event path, positional
    and without a model instance because it runs once per published event."""
    # Copied to its exact size: orjson's result keeps the whole buffer it wrote into, and a record
    # stays alive until its batch is acknowledged (measured with bench/relay.py's events: 5.3 ->
    # 2.9 KiB of heap per encoded record, envelopes of 1.7 KiB; the copy costs ~0.1 us).
    return bytes(
        memoryview(
            orjson.dumps(
                {
                    "event_id": event_id,
                    "order_id": order_id,
                    "stream_id": stream_id,
                    "version": version,
                    "position": position,
                    "type": type_,
                    "schema_version": schema_version,
                    "data": data,
                    "metadata": metadata,
                    "recorded_at": recorded_at,
                    "order": order,
                }
            )
        )
    )


def build_envelope(
    *,
    event_id: str,
    order_id: str | None,
    stream_id: str,
    version: int,
    position: int,
    type_: str,
    schema_version: int,
    data: Mapping[str, Any],
    metadata: Mapping[str, Any],
    recorded_at: datetime,
    order: Mapping[str, Any] | None,
) -> bytes:
    """`encode_envelope` from plain mappings (the fan-out re-encoding a parked event)."""
    return encode_envelope(
        event_id,
        order_id,
        stream_id,
        version,
        position,
        type_,
        schema_version,
        orjson.Fragment(dumps_canonical(data)),
        orjson.Fragment(dumps_canonical(metadata)),
        recorded_at,
        None if order is None else orjson.Fragment(dumps_canonical(order)),
    )

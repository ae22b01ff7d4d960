"""Message schemas of the Kafka interface (documented in docs/asyncapi.json).

`orders.intake` carries `IntakeEnvelope`s: one command each, with the same body as the HTTP
route of that command. `orders.intake.rejected` carries `RejectedCommand`s: the reason as an
RFC 9457 problem plus the original message (value and headers), so nothing is dropped
silently. `orders.events` (written by the relay) carries `EventEnvelope`s (`ledger_kernel.wire.envelope`, docs/CONTRACTS.md).
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ledger.domain.commands import (
    CancelOrder,
    DeleteOrder,
    DispatchShipment,
    MarkDelivered,
    PlaceOrder,
    RecordPayment,
    RestockItems,
    UpdateOrder,
)

CommandName = Literal[
    "place_order",
    "update_order",
    "record_payment",
    "dispatch_shipment",
    "mark_delivered",
    "cancel_order",
    "delete_order",
    "restock_items",
]

COMMANDS: dict[str, type[BaseModel]] = {
    "place_order": PlaceOrder,
    "update_order": UpdateOrder,
    "record_payment": RecordPayment,
    "dispatch_shipment": DispatchShipment,
    "mark_delivered": MarkDelivered,
    "cancel_order": CancelOrder,
    "delete_order": DeleteOrder,
    "restock_items": RestockItems,
}
"""Intake command name -> body model (the same models as the HTTP routes)."""

ROUTES: dict[str, str] = {
    "place_order": "POST /orders",
    "update_order": "PUT /orders/{id}",
    "record_payment": "POST /orders/{id}/payments",
    "dispatch_shipment": "POST /orders/{id}/shipments",
    "mark_delivered": "POST /orders/{id}/shipments/{sid}/delivered",
    "cancel_order": "POST /orders/{id}/cancel",
    "delete_order": "DELETE /orders/{id}",
    "restock_items": "POST /orders/{id}/restocks",
}
"""The HTTP route each command shares its idempotency fingerprint with (same request = same key)."""


class IntakeEnvelope(BaseModel):
    """One command on `orders.intake` (JSON, UTF-8). Money in `body` is decimal major units."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "command": "place_order",
                    "idempotency_key": "checkout-7f3c2a1e-0001",
                    "client_id": "checkout",
                    "body": {
                        "external_id": "CART-88123",
                        "currency": "AUD",
                        "total": 199.95,
                        "items": [{"name": "Trench Coat", "quantity": 1, "price_sell": 199.95}],
                    },
                }
            ]
        },
    )

    command: CommandName = Field(description="Which command `body` is")
    order_id: UUID | None = Field(
        None, description="Target order; required for every command but place_order"
    )
    expected_version: int | None = Field(
        None,
        ge=0,
        le=2**31 - 1,
        description="Optimistic concurrency (like HTTP If-Match): reject if the order moved",
    )
    idempotency_key: str | None = Field(
        None,
        min_length=8,
        max_length=255,
        pattern=r"^[A-Za-z0-9._:~+/=-]+$",
        description="Scoped by client_id. Default: the `idempotency-key` header, else topic:partition:offset",
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="The producer; scopes idempotency keys and external ids. Default: `kafka`",
    )
    body: dict[str, Any] = Field(
        default_factory=dict, description="The HTTP route's JSON body for this command"
    )


class OriginalMessage(BaseModel):
    """The rejected message as it was read."""

    topic: str
    partition: int
    offset: int
    key: str | None = Field(None, description="UTF-8 key, or base64 when `key_base64` is true")
    key_base64: bool = False
    value: str = Field(description="UTF-8 value, or base64 when `value_base64` is true")
    value_base64: bool = False
    headers: dict[str, str] = Field(
        default_factory=dict, description="Header values, UTF-8 (invalid bytes replaced)"
    )


class RejectedCommand(BaseModel):
    """A command the ledger refused, on `orders.intake.rejected` (key = the original key)."""

    problem: dict[str, Any] = Field(description="RFC 9457 problem: type, title, status, detail, errors...")
    original: OriginalMessage
    rejected_at: str = Field(description="RFC 3339 time of the rejection")

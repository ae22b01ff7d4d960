"""Response models for the OpenAPI document only: handlers write bytes with orjson themselves.

They describe the shape clients rely on (docs/architecture.md#http-api) and allow extra fields, so the domain's
view can grow without breaking the document.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ledger.api.problems import PROBLEM_MEDIA_TYPE
from ledger.domain.commands import Ident, MarkDelivered

#: Money in answers: an exact JSON decimal number in major units (`19.95`), never a string; the
#: handlers write `Decimal` as a number (`jsonbody.dumps`), so the document says `number`.
MoneyOut = Annotated[
    Decimal, WithJsonSchema({"type": "number", "description": "Major units of the order's currency"})
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class OrderItemView(_Open):
    line_id: str
    name: str
    quantity: int
    price_sell: MoneyOut
    price_current: MoneyOut
    price_original: MoneyOut


class OrderView(_Open):
    """An order; money is a JSON number in major units of `currency`."""

    id: str
    external_id: str | None
    version: int
    status: str
    payment_status: str
    fulfillment_status: str
    currency: str
    subtotal: MoneyOut
    discount: MoneyOut
    tax: MoneyOut
    shipping: MoneyOut
    total: MoneyOut
    items: list[OrderItemView]
    shipments: list[dict[str, Any]]
    transactions: list[dict[str, Any]]
    created_at: str
    updated_at: str


class OrderEnvelope(BaseModel):
    data: OrderView


class TransactionList(BaseModel):
    data: list[dict[str, Any]]
    next_cursor: str | None = None


class EventView(BaseModel):
    event_id: str
    stream_id: str
    order_id: str
    version: int
    position: int
    type: str
    schema_version: int
    data: dict[str, Any] = Field(description="Event data as stored (money in integer minor units)")
    metadata: dict[str, Any] = Field(
        description="actor, client_id, source, correlation_id, causation_id, idempotency_key, request_id"
    )
    recorded_at: str


class EventList(BaseModel):
    data: list[EventView]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page"
    )


class MarkDeliveredBody(MarkDelivered):
    """The body of `.../shipments/{shipment_id}/delivered`: the path names the shipment, so the
    body may leave `shipment_id` out; when given it must equal the path's (else 422)."""

    shipment_id: Ident | None = None  # type: ignore[assignment]


class ProblemModel(_Open):
    """RFC 9457 problem details."""

    type: str = Field(description="urn:order-ledger:problem:<slug>")
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = Field(None, description="Field errors: loc, msg, type")


_DESCRIPTIONS = {
    400: "Malformed request (JSON syntax, headers such as a second Authorization)",
    401: "Missing or unknown bearer token",
    403: "The token lacks the route's scope",
    404: "No such order (or, for reconciliations, none has run yet)",
    409: "Version conflict (with current_version), duplicate external_id, idempotent request in progress,"
    " or a reconciliation already running",
    410: "The order was deleted",
    413: "Body too large",
    415: "Content-Type is not application/json",
    422: "Invalid body or query parameter (limit, cursor, filter), a domain rule failed, "
    "or an idempotency key reused with another body",
    503: "Database unavailable; retry after Retry-After",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting problem+json errors."""
    return {
        code: {
            "description": _DESCRIPTIONS[code],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemModel"}}},
        }
        for code in codes
    }

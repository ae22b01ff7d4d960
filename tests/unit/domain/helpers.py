"""An in-memory order stream for tests: decide, then evolve, like the service does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel

from ledger.domain import (
    CancelOrder,
    Command,
    DeleteOrder,
    DispatchShipment,
    MarkDelivered,
    Order,
    OrderEvent,
    PersonalDataErased,
    PlaceOrder,
    RecordPayment,
    RestockItems,
    UpdateOrder,
    decide,
    evolve,
)
from ledger_kernel.wire.codec import parse_json

M = TypeVar("M", bound=BaseModel)

T0 = datetime(2025, 6, 15, 14, 0, tzinfo=UTC)

SEED_CREATE = """{
"profile_id": "9332c9b2-e31c-4d49-8ec3-62a9466d339c",
"external_id": "CART-88123",
"total": 199.95,
"status": "pending",
"items": [
{
"name": "Trench Coat",
"product_variant_id": 441200,
"quantity": 1,
"price_current": 199.95,
"price_sell": 199.95,
"price_original": 199.95
}
]
}"""

SEED_UPDATE = """{
"status": "processing",
"total": 249.90
}"""


def body(model: type[M], data: dict[str, Any] | str, **context: Any) -> M:
    """Validate a request body the way the API does: exact JSON parse, then the model."""
    raw = data if isinstance(data, str) else json.dumps(data)
    return model.model_validate(parse_json(raw), context=context or None)


class Stream:
    """One order's event stream; ``send`` decides and folds, advancing a fake clock a minute."""

    def __init__(self, start: datetime = T0) -> None:
        self.state: Order | None = None
        self.log: list[tuple[OrderEvent, int, datetime]] = []
        self.clock = start
        self._ids = 0

    def ids(self) -> UUID:
        self._ids += 1
        return UUID(int=self._ids)

    def send(self, command: Command) -> list[OrderEvent]:
        self.clock += timedelta(minutes=1)
        events = decide(command, self.state, now=self.clock, ids=self.ids)
        for event in events:
            version = len(self.log) + 1
            self.state = evolve(self.state, event, version=version, recorded_at=self.clock)
            self.log.append((event, version, self.clock))
        return events

    def record(self, event: OrderEvent) -> None:
        """Fold an event no command decides (e.g. `PersonalDataErased`, appended by an erasure)."""
        self.clock += timedelta(minutes=1)
        version = len(self.log) + 1
        self.state = evolve(self.state, event, version=version, recorded_at=self.clock)
        self.log.append((event, version, self.clock))

    @property
    def order(self) -> Order:
        assert self.state is not None
        return self.state


def every_event_type() -> Stream:
    """A stream that holds one of every event type, ending deleted."""
    s = Stream()
    s.send(body(PlaceOrder, {"items": [{"name": "Mug", "sku": "M", "quantity": 2, "price_sell": "12.50"}]}))
    s.send(body(UpdateOrder, {"note": "gift", "status": "processing", "shipping": "5.00"}))
    for kind, amount in [("authorized", "30.00"), ("captured", "10.00"), ("voided", "20.00")]:
        s.send(body(RecordPayment, {"kind": kind, "amount": amount}))
    s.send(
        body(
            DispatchShipment, {"lines": [{"sku": "M", "quantity": 1}], "tracking_url": "https://t.example/1"}
        )
    )
    s.send(body(MarkDelivered, {"shipment_id": "S1"}))
    s.send(body(RecordPayment, {"kind": "refunded", "amount": "10.00"}))
    s.send(body(RestockItems, {"lines": [{"sku": "M", "quantity": 1}]}))
    s.send(body(CancelOrder, {"reason": "returned"}))
    s.record(
        PersonalDataErased(erasure_id=UUID(int=7), requested_by="dpo", basis="request", erased_at=s.clock)
    )
    s.send(body(DeleteOrder, {}))
    return s

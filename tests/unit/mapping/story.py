"""Build `orders.events` envelopes with the real domain (decide -> evolve -> order_to_json).

Why: until the relay publishes them, fan-out tests produce envelopes themselves, and they must
be exactly what the relay will send (docs/architecture.md#kafka), so they come from the same domain functions.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from consumers.fanout.mapping_types import Envelope
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
    UpdateOrder,
    decide,
    event_data,
    evolve,
    order_to_json,
)

_positions = itertools.count(1)
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def dumps(envelope: dict[str, Any]) -> bytes:
    """JSON with decimal money as exact JSON numbers (as the views module recommends)."""
    return orjson.dumps(envelope, default=lambda d: orjson.Fragment(str(d)))


class OrderStory:
    """One order's life; each step returns the envelopes (dicts) its events produced."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start
        self.order: Order | None = None
        self.envelopes: list[dict[str, Any]] = []

    @property
    def order_id(self) -> str:
        assert self.order is not None
        return str(self.order.id)

    def run(self, command: Command) -> list[dict[str, Any]]:
        self.now += timedelta(minutes=1)
        return self._record(decide(command, self.order, now=self.now, ids=uuid.uuid4))

    def erase(self) -> list[dict[str, Any]]:
        """The `PersonalDataErased` event an erasure appends (no command decides it)."""
        self.now += timedelta(minutes=1)
        event = PersonalDataErased(
            erasure_id=uuid.uuid4(), requested_by="dpo", basis="request", erased_at=self.now
        )
        return self._record([event])

    def _record(self, events: Sequence[OrderEvent]) -> list[dict[str, Any]]:
        out = []
        for event in events:
            version = 1 if self.order is None else self.order.version + 1
            self.order = evolve(self.order, event, version=version, recorded_at=self.now)
            order_id = str(self.order.id)
            env = {
                "event_id": str(uuid.uuid4()),
                "order_id": order_id,
                "stream_id": f"order-{order_id}",
                "version": version,
                "position": next(_positions),
                "type": event.type,
                "schema_version": event.schema_version,
                "data": event_data(event),
                "metadata": {"actor": "test"},
                "recorded_at": self.now.isoformat(),
                "order": order_to_json(self.order),
            }
            out.append(env)
        self.envelopes.extend(out)
        return out

    # -- readable steps ---------------------------------------------------------------------
    def place(
        self,
        *,
        lines: int = 2,
        currency: str = "USD",
        price: str = "10.00",
        current: str | None = None,
        original: str | None = None,
        categories: tuple[str, ...] = (),
        **extra: Any,
    ) -> list[dict[str, Any]]:
        items = [
            {
                "line_id": f"L{i + 1}",
                "name": f"Item {i + 1}",
                "quantity": 1,
                "price_sell": Decimal(price),
                "price_current": Decimal(current or price),
                "price_original": Decimal(original or price),
                "sku": f"SKU-{i + 1}",
                "product_id": f"P{i + 1}",
                "product_variant_id": 1000 + i,
                "categories": list(categories),
            }
            for i in range(lines)
        ]
        total = Decimal(price) * lines
        body: dict[str, Any] = {
            "external_id": "1001",
            "currency": currency,
            "total": total,
            "subtotal": total,
            "email": "ann@example.com",
            "first_name": "Ann",
            "profile_id": "9332c9b2-e31c-4d49-8ec3-62a9466d339c",
            "shipping_address": {"country_code": "US", "city": "Austin", "postal_code": "73301"},
            "items": items,
        }
        body.update(extra)
        # Orders above the API default (500 lines) exist (F22): the mapper must cope with them.
        return self.run(PlaceOrder.model_validate(body, context={"max_lines": max(500, lines)}))

    def pay(self, amount: str, kind: str = "captured") -> list[dict[str, Any]]:
        return self.run(RecordPayment(kind=kind, amount=Decimal(amount)))

    def ship(
        self, shipment_id: str, *line_ids: str, tracking: str = "TRK", location: str | None = "WH1"
    ) -> list[dict[str, Any]]:
        """Dispatch one of each named line; `location=None` is an online order's shipment."""
        return self.run(
            DispatchShipment.model_validate(
                {
                    "shipment_id": shipment_id,
                    "lines": [{"line_id": line_id, "quantity": 1} for line_id in line_ids],
                    "carrier": "UPS",
                    "tracking_code": f"{tracking}-{shipment_id}",
                    "tracking_url": f"https://track.example.com/{shipment_id}",
                    "location_id": location,
                }
            )
        )

    def deliver(self, shipment_id: str) -> list[dict[str, Any]]:
        return self.run(MarkDelivered(shipment_id=shipment_id))

    def update(self, **fields: Any) -> list[dict[str, Any]]:
        return self.run(UpdateOrder.model_validate(fields))

    def cancel(self, reason: str = "customer asked") -> list[dict[str, Any]]:
        return self.run(CancelOrder(reason=reason))

    def delete(self) -> list[dict[str, Any]]:
        return self.run(DeleteOrder())


def parse(env: dict[str, Any]) -> Envelope:
    """The worker's view of an envelope, through the same bytes it would read from Kafka."""
    return Envelope.from_bytes(dumps(env))

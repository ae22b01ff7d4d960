"""Realistic order histories for tests, benchmarks and demos, decided by the domain itself.

Every event comes out of `decide` (commands that break a rule are dropped, as a real
producer's would be answered 422), so histories exercise the same paths as production:
partial captures, split shipments, deliveries, refunds, cancels with restocks, deletes.
Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from ledger.domain import (
    CancelOrder,
    DeleteOrder,
    DispatchShipment,
    DomainError,
    MarkDelivered,
    Order,
    OrderEvent,
    PlaceOrder,
    RecordPayment,
    RestockItems,
    UpdateOrder,
    decide,
    event_data,
    evolve,
    schema_version_of,
)
from ledger.domain.commands import Command
from ledger.domain.money import to_major
from ledger.store.records import NewEvent
from ledger_kernel.wire.streams import stream_id_of

_PRODUCTS = [("Shirt", "19.95"), ("Hat", "12.50"), ("Socks", "4.99"), ("Jacket", "149.00"), ("Mug", "9.00")]
_STATUSES = ["processing", "packed", "on-hold", "pending"]


class HistoryGenerator:
    """Generates whole order histories as `(stream_id, [events])`."""

    def __init__(
        self, seed: int = 0, start: datetime | None = None, rng: random.Random | None = None
    ) -> None:
        self.rng = rng or random.Random(seed)
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._uuid_counter = 0

    def _uuid(self) -> UUID:
        self._uuid_counter += 1
        # The counter sits above the version bits: ids are unique even when the random part is not.
        return UUID(int=(self._uuid_counter << 80) | self.rng.getrandbits(64), version=4)

    def _tick(self) -> datetime:
        self.now += timedelta(seconds=self.rng.randint(1, 600))
        return self.now

    def _place(self) -> PlaceOrder:
        rng = self.rng
        currency = rng.choice(["AUD", "AUD", "USD", "JPY"])
        items: list[dict[str, Any]] = []
        for n in range(rng.randint(1, 4)):
            name, price = rng.choice(_PRODUCTS)
            if currency == "JPY":
                price = str(int(Decimal(price) * 100))
            items.append(
                {
                    "name": name,
                    "quantity": rng.randint(1, 3),
                    "price_sell": Decimal(price),
                    "price_current": Decimal(price),
                    "price_original": Decimal(price),
                    "sku": f"{name[:3].upper()}-{n}",
                    "product_variant_id": rng.randint(1, 10_000),
                }
            )
        return PlaceOrder.model_validate(
            {
                "external_id": f"ext-{self._uuid_counter}-{rng.getrandbits(32):x}",
                "source": rng.choice(["web", "pos", "app"]),
                "profile_id": f"p-{rng.randint(1, 5000)}",
                "email": f"c{rng.randint(1, 5000)}@example.com",
                "currency": currency,
                "shipping": Decimal(rng.choice(["0", "5", "9"])),
                "items": items,
            }
        )

    def _next_command(self, state: Order) -> Command:
        rng = self.rng
        remaining = {line.line_id: line.quantity for line in state.lines}
        for line_id, qty in state.shipped_quantities().items():
            remaining[line_id] = remaining.get(line_id, 0) - qty
        unpaid = state.amounts.total - state.captured
        roll = rng.random()
        cur = state.currency
        if unpaid > 0 and roll < 0.45:
            amount = unpaid if rng.random() < 0.6 else max(1, unpaid // 2)
            kind = "authorized" if rng.random() < 0.15 else "captured"
            return RecordPayment.model_validate({"kind": kind, "amount": _major(amount, cur)})
        if roll < 0.75 and any(q > 0 for q in remaining.values()):
            lines = [{"line_id": lid, "quantity": rng.randint(1, q)} for lid, q in remaining.items() if q > 0]
            return DispatchShipment.model_validate(
                {"lines": rng.sample(lines, rng.randint(1, len(lines))), "carrier": "AusPost"}
            )
        if roll < 0.82 and state.shipments:
            return MarkDelivered.model_validate({"shipment_id": rng.choice(state.shipments).shipment_id})
        if roll < 0.88:
            return UpdateOrder.model_validate({"status": rng.choice(_STATUSES)})
        if roll < 0.92 and state.captured > state.refunded:
            return RecordPayment.model_validate(
                {"kind": "refunded", "amount": _major(state.captured - state.refunded, cur)}
            )
        if roll < 0.95 and not state.shipments:
            return CancelOrder.model_validate({"reason": "customer asked"})
        if roll < 0.97 and state.shipments:
            shipped = state.shipped_quantities()
            lid = rng.choice(list(shipped))
            return RestockItems.model_validate(
                {"lines": [{"line_id": lid, "quantity": 1}], "reason": "return"}
            )
        if roll < 0.975:
            return DeleteOrder.model_validate({"reason": "test order"})
        return UpdateOrder.model_validate({"note": f"note {rng.randint(1, 99)}"})

    def history(self, max_events: int = 12) -> tuple[str, list[OrderEvent]]:
        """One order's events (1..max_events), each decided against the state before it."""
        events = decide(self._place(), None, now=self._tick(), ids=self._uuid)
        state = evolve(None, events[0], version=1, recorded_at=self.now)
        target = self.rng.randint(1, max_events)
        attempts = 0
        while len(events) < target and attempts < 4 * max_events and not state.deleted:
            attempts += 1
            try:
                decided = decide(self._next_command(state), state, now=self._tick(), ids=self._uuid)
            except DomainError:
                continue
            for event in decided:
                if len(events) >= target:
                    break
                events.append(event)
                state = evolve(state, event, version=len(events), recorded_at=self.now)
        return stream_id_of(state.id), events

    def histories(self, orders: int, max_events: int = 12) -> Iterator[tuple[str, list[OrderEvent]]]:
        for _ in range(orders):
            yield self.history(max_events)


def _major(minor: int, currency: str) -> Decimal:
    return to_major(minor, currency)


def new_event(event: OrderEvent, **metadata: Any) -> NewEvent:
    """The store's `NewEvent` of a domain event."""
    return NewEvent(
        type=event.type, data=event_data(event), metadata=metadata, schema_version=schema_version_of(event)
    )

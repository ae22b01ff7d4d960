"""What a reconciliation found: the report the CLI prints, the API serves and the console shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: Mismatch kinds (docs/reliability.md#reconcile).
MISSING = "missing"
"""Events of the log that are not on the topic."""
OUT_OF_ORDER = "out_of_order"
"""An order's versions on the topic skip one (a later version came first)."""
EXTRA = "extra"
"""The topic holds versions of an order that the log does not have."""
READ_MODEL_DIFFERS = "read_model_differs"
"""A read model's rows of an order differ from a fold of the log at the projection's checkpoint."""
UNDELIVERED = "undelivered"
"""A destination's delivery state is behind the published stream and the order is not parked."""

KINDS = (MISSING, OUT_OF_ORDER, EXTRA, READ_MODEL_DIFFERS, UNDELIVERED)


def kafka_place(topic: str) -> str:
    return f"kafka:{topic}"


def projection_place(name: str) -> str:
    return f"projection:{name}"


def destination_place(name: str) -> str:
    return f"destination:{name}"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One thing the log has that a place does not agree with."""

    kind: str
    place: str
    order_id: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "place": self.place, "order_id": self.order_id, "detail": self.detail}

    def line(self) -> str:
        return f"{self.place}: {self.kind}: order {self.order_id}: {self.detail}"


@dataclass(frozen=True)
class ReconcileReport:
    """One run: its range of log positions, how far it got, counts per place, its mismatches.

    `counts` maps a place (`log`, `kafka:<topic>`, `projection:<name>`, `destination:<name>`)
    to figures (orders and events checked, and per place: pending, duplicates, parked, ...).
    `mismatches` holds the stored ones (at most the run's cap); `mismatch_count` counts all.
    """

    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str  # running | finished | failed
    from_position: int
    to_position: int
    checked_through: int
    counts: Mapping[str, Mapping[str, int]]
    mismatch_count: int
    mismatches: tuple[Mismatch, ...] = field(default=())
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished and found nothing."""
        return self.status == "finished" and self.mismatch_count == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "status": self.status,
            "ok": self.ok,
            "range": {"from_position": self.from_position, "to_position": self.to_position},
            "checked_through": self.checked_through,
            "counts": {place: dict(figures) for place, figures in self.counts.items()},
            "mismatch_count": self.mismatch_count,
            "mismatches": [m.as_json() for m in self.mismatches],
            "error": self.error,
        }

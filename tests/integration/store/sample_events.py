"""A tiny test-local event vocabulary, so the store's tests do not depend on the domain."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from ledger.store import AppendResult, Checkpoint, EventRegistry, EventStore, NewEvent


class ItemAdded(BaseModel):
    """Version 2 renamed `qty` (v1) to `quantity`."""

    type: Literal["ItemAdded"] = "ItemAdded"
    schema_version: ClassVar[int] = 2
    sku: str
    quantity: int


class Noted(BaseModel):
    type: Literal["Noted"] = "Noted"
    schema_version: ClassVar[int] = 1
    text: str


class Closed(BaseModel):
    type: Literal["Closed"] = "Closed"
    schema_version: ClassVar[int] = 1
    reason: str = ""


def upcast_item_added_v1(data: dict[str, Any]) -> dict[str, Any]:
    data["quantity"] = data.pop("qty")
    return data


def make_registry() -> EventRegistry:
    return EventRegistry([ItemAdded, Noted, Closed], {("ItemAdded", 1): upcast_item_added_v1})


def new_stream() -> str:
    return f"order-{uuid.uuid4()}"


def noted(text: str = "hello", **metadata: Any) -> NewEvent:
    return NewEvent("Noted", {"text": text}, metadata or {"actor": "tester", "source": "tests"})


def item(sku: str = "SKU-1", quantity: int = 1) -> NewEvent:
    return NewEvent("ItemAdded", {"sku": sku, "quantity": quantity}, {"actor": "tester"})


async def wait_through_fence(store: EventStore, result: AppendResult, timeout: float = 30.0) -> None:
    """Wait until an append is readable through the xid8 fence.

    The fence is cluster-wide: any open writer anywhere on the server (another test's CREATE
    DATABASE, a concurrent suite) holds it back for a moment, so fenced reads right after an
    append must wait rather than assume.
    """
    assert result.tx is not None
    target = Checkpoint(result.tx, result.positions[-1])
    async with asyncio.timeout(timeout):
        while await store.head() < target:  # noqa: ASYNC110 (polls database state)
            await asyncio.sleep(0.005)

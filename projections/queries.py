"""List queries over the read models, for `GET /api/v3/orders` and `GET /api/v3/transactions`.

They read the views (`order_state`, `transactions`), so they follow blue/green swaps without
knowing about versions. Pagination is keyset, never OFFSET: orders by `(updated_at, id)`, so a
client syncing with `updated_since` + `cursor` sees an order again after it changes rather than
missing it; Transactions by `(transacted_at, order_id, shipment_id)`. The cursor is opaque
(base64url JSON of the last row's key). SQL is assembled from the filters actually given, so
each combination gets a plan that uses its index (no `$1 IS NULL OR ...` generic plans).

Rows are the stored JSON views, parsed with `Decimal` numbers so money stays exact.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from ledger_kernel.wire.paging import MAX_PAGE_SIZE

MAX_LIMIT = MAX_PAGE_SIZE

Executor = asyncpg.Connection | asyncpg.Pool
Page = tuple[list[dict[str, Any]], str | None]


class InvalidQuery(ValueError):
    """A malformed cursor or filter (HTTP 422)."""


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidQuery("cursor is not valid; pass back next_cursor as given") from None
    if not isinstance(values, list) or len(values) != size or not all(isinstance(v, str) for v in values):
        raise InvalidQuery("cursor is not valid; pass back next_cursor as given")
    return values


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidQuery("cursor is not valid; pass back next_cursor as given") from None
    if parsed.tzinfo is None:
        raise InvalidQuery("cursor is not valid; pass back next_cursor as given")
    return parsed


def _uuid(value: str, what: str = "cursor") -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InvalidQuery(f"{what} is not a valid id") from None


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _doc(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text, parse_float=Decimal)
    return doc


class _Where:
    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def param(self, value: Any, cast: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{cast}"

    def add(self, clause: str) -> None:
        self.clauses.append(clause)

    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "true"


async def list_orders(
    db: Executor,
    *,
    status: str | None = None,
    payment_status: str | None = None,
    fulfillment_status: str | None = None,
    updated_since: datetime | None = None,
    external_id: str | None = None,
    profile_id: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Orders (JSON views, deleted ones left out) matching every given filter, oldest update first."""
    limit = _limit(limit)
    where = _Where()
    where.add("NOT deleted")
    for column, value in (
        ("status", status),
        ("payment_status", payment_status),
        ("fulfillment_status", fulfillment_status),
        ("external_id", external_id),
        ("profile_id", profile_id),
    ):
        if value is not None:
            where.add(f"{column} = {where.param(value, 'text')}")
    if updated_since is not None:
        if updated_since.tzinfo is None:
            raise InvalidQuery("updated_since needs a time zone (RFC 3339)")
        where.add(f"updated_at >= {where.param(updated_since, 'timestamptz')}")
    if cursor is not None:
        at, order_id = decode_cursor(cursor, 2)
        after_at, after_id = where.param(_timestamp(at), "timestamptz"), where.param(_uuid(order_id), "uuid")
        where.add(f"(updated_at, id) > ({after_at}, {after_id})")
    sql = (
        f"SELECT doc, updated_at, id FROM order_state WHERE {where.sql()}"
        f" ORDER BY updated_at, id LIMIT {where.param(limit + 1, 'integer')}"
    )
    rows = await db.fetch(sql, *where.args)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor([last["updated_at"].isoformat(), str(last["id"])])
    return [_doc(r["doc"]) for r in rows], next_cursor


async def list_transactions(
    db: Executor,
    *,
    order_id: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Transactions (JSON views) of one order or all, with `since <= transacted_at < until`."""
    limit = _limit(limit)
    where = _Where()
    if order_id is not None:
        where.add(f"order_id = {where.param(order_id, 'uuid')}")
    for value, op in ((since, ">="), (until, "<")):
        if value is not None:
            if value.tzinfo is None:
                raise InvalidQuery("since and until need a time zone (RFC 3339)")
            where.add(f"transacted_at {op} {where.param(value, 'timestamptz')}")
    if cursor is not None:
        at, after_order, after_shipment = decode_cursor(cursor, 3)
        key = (
            where.param(_timestamp(at), "timestamptz"),
            where.param(_uuid(after_order), "uuid"),
            where.param(after_shipment, "text"),
        )
        where.add(f"(transacted_at, order_id, shipment_id) > ({', '.join(key)})")
    sql = (
        "SELECT doc, transacted_at, order_id, shipment_id FROM transactions"
        f" WHERE {where.sql()} ORDER BY transacted_at, order_id, shipment_id"
        f" LIMIT {where.param(limit + 1, 'integer')}"
    )
    rows = await db.fetch(sql, *where.args)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(
            [last["transacted_at"].isoformat(), str(last["order_id"]), last["shipment_id"]]
        )
    return [_doc(r["doc"]) for r in rows], next_cursor

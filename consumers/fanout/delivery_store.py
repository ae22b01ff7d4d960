"""PostgreSQL side of the fan-out: delivery state, inbox, park queue, halts (migration 0060).

Why Postgres and not Kafka offsets: the destination's effect and our record of it must agree
after any crash. The inbox row and the delivery state are written in one transaction, before
the offset commit, so a redelivered event is recognised and causes no second effect (F10).
Per-order work is serialised by a session advisory lock so a worker and a `redrive` never
deliver the same order at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Conn", "DeliveryRow", "FanoutStore", "ParkedRow"]

Conn = asyncpg.Connection | PoolConnectionProxy
"""A plain connection or one held from the pool."""


@dataclass(slots=True)
class DeliveryRow:
    """What a destination has for one order; mutated in memory, then saved."""

    destination: str
    order_id: str
    remote_id: str | None = None
    remote_exists: bool = False
    status: str = "ok"
    last_version: int = 0
    last_position: int = 0
    sent: dict[str, str] = field(default_factory=dict)
    not_applicable: str | None = None
    """Why the destination cannot take this order (it holds nothing of it), or None."""


@dataclass(frozen=True, slots=True)
class ParkedRow:
    destination: str
    event_id: str
    order_id: str
    version: int
    position: int
    envelope: bytes
    reason: str
    detail: Any
    attempts: int
    parked_at: datetime


def _lock_key(destination: str, order_id: str) -> int:
    digest = hashlib.blake2b(f"fanout:{destination}:{order_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class FanoutStore:
    """All fan-out SQL in one place; every method takes the pool or a held connection."""

    def __init__(self, pool: asyncpg.Pool, destination: str) -> None:
        self.pool = pool
        self.destination = destination

    @asynccontextmanager
    async def order_lock(self, order_id: str) -> AsyncIterator[Conn]:
        """Hold the per-(destination, order) advisory lock on a connection for the whole delivery."""
        key = _lock_key(self.destination, order_id)
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            try:
                yield conn
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)

    @asynccontextmanager
    async def orders_lock(self, order_ids: Sequence[str]) -> AsyncIterator[Conn]:
        """`order_lock` for many orders on ONE connection (a batch of orders delivered together).

        Keys are taken in ascending order, so two batch holders cannot deadlock; a single-order
        holder never waits for a second key, so it cannot close a cycle either.
        """
        keys = sorted({_lock_key(self.destination, o) for o in order_ids})
        async with self.pool.acquire() as conn:
            try:
                for key in keys:
                    await conn.execute("SELECT pg_advisory_lock($1)", key)
                yield conn
            finally:
                await conn.execute("SELECT pg_advisory_unlock_all()")

    async def load(self, conn: Conn, order_id: str) -> DeliveryRow:
        row = await conn.fetchrow(
            "SELECT remote_id, remote_exists, status, last_version, last_position, sent, not_applicable"
            " FROM fanout_delivery WHERE destination = $1 AND order_id = $2",
            self.destination,
            order_id,
        )
        if row is None:
            return DeliveryRow(self.destination, order_id)
        return _row_of(self.destination, order_id, row)

    async def snapshot(
        self, conn: Conn, order_id: str, event_ids: Sequence[str]
    ) -> tuple[DeliveryRow, set[str], bool]:
        """Delivery state, already-seen event ids and whether the order is parked, in ONE round trip."""
        row = await conn.fetchrow(
            "SELECT d.remote_id, d.remote_exists, d.status, d.last_version, d.last_position, d.sent,"
            " d.not_applicable,"
            " ARRAY(SELECT event_id FROM fanout_inbox WHERE destination = $1 AND event_id = ANY($3::text[])"
            "  UNION SELECT event_id FROM fanout_parked WHERE destination = $1 AND event_id = ANY($3::text[])) AS seen,"
            " EXISTS (SELECT 1 FROM fanout_parked WHERE destination = $1 AND order_id = $2) AS parked"
            " FROM (SELECT 1) AS one LEFT JOIN fanout_delivery d ON d.destination = $1 AND d.order_id = $2",
            self.destination,
            order_id,
            list(event_ids),
        )
        assert row is not None  # the LEFT JOIN always yields one row
        delivery = DeliveryRow(self.destination, order_id)
        if row["status"] is not None:
            delivery = _row_of(self.destination, order_id, row)
        return delivery, set(row["seen"]), bool(row["parked"])

    async def seen(self, conn: Conn, event_ids: Sequence[str]) -> set[str]:
        """Event ids already handled (inbox) or already waiting in the park queue."""
        rows = await conn.fetch(
            "SELECT event_id FROM fanout_inbox WHERE destination = $1 AND event_id = ANY($2::text[])"
            " UNION SELECT event_id FROM fanout_parked WHERE destination = $1 AND event_id = ANY($2::text[])",
            self.destination,
            list(event_ids),
        )
        return {r["event_id"] for r in rows}

    async def is_parked(self, conn: Conn, order_id: str) -> bool:
        value = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM fanout_parked WHERE destination = $1 AND order_id = $2)",
            self.destination,
            order_id,
        )
        return bool(value)

    async def save(self, conn: Conn, row: DeliveryRow) -> None:
        """Upsert the delivery state (used alone for intents and after each successful call)."""
        await conn.execute(
            "INSERT INTO fanout_delivery AS d (destination, order_id, remote_id, remote_exists, status,"
            " last_version, last_position, sent, not_applicable)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (destination, order_id) DO UPDATE SET remote_id = EXCLUDED.remote_id,"
            " remote_exists = EXCLUDED.remote_exists, status = EXCLUDED.status,"
            " last_version = EXCLUDED.last_version, last_position = EXCLUDED.last_position,"
            " sent = EXCLUDED.sent, not_applicable = EXCLUDED.not_applicable, updated_at = now()",
            row.destination,
            row.order_id,
            row.remote_id,
            row.remote_exists,
            row.status,
            row.last_version,
            row.last_position,
            row.sent,
            row.not_applicable,
        )

    async def mark(self, conn: Conn, key: str, values: Mapping[str, str]) -> None:
        """Add `key: value` to each order's `sent` (creating its row), in ONE statement.

        Why not `save`: the marks of a whole batch of orders are written before it is waited
        for, and the rows' other state is read again by each order's own delivery.
        """
        await conn.execute(
            "INSERT INTO fanout_delivery AS d (destination, order_id, sent)"
            " SELECT $1, u.o, jsonb_build_object($2::text, u.v)"
            " FROM unnest($3::text[], $4::text[]) AS u(o, v)"
            " ON CONFLICT (destination, order_id) DO UPDATE SET sent = d.sent || EXCLUDED.sent,"
            " updated_at = now()",
            self.destination,
            key,
            list(values),
            list(values.values()),
        )

    async def record(
        self,
        conn: Conn,
        row: DeliveryRow,
        inbox: Iterable[tuple[str, int, str, int]],
    ) -> None:
        """Delivery state + inbox rows `(event_id, version, outcome, calls)` in ONE transaction."""
        async with conn.transaction():
            await self.save(conn, row)
            await conn.executemany(
                "INSERT INTO fanout_inbox (destination, event_id, order_id, version, outcome, calls)"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (destination, event_id) DO UPDATE SET outcome = EXCLUDED.outcome,"
                " calls = EXCLUDED.calls, processed_at = now()",
                [(self.destination, e, row.order_id, v, o, c) for e, v, o, c in inbox],
            )

    async def park(
        self,
        conn: Conn,
        order_id: str,
        items: Sequence[tuple[str, int, int, bytes]],
        reason: str,
        detail: Any = None,
    ) -> None:
        """Queue `(event_id, version, position, envelope)` behind (or as) the order's parked head.

        The first item gets `reason`; the others wait ('waiting behind ...'). Re-parking an event
        already queued updates its reason (redrive failed again) and counts the attempt.
        """
        async with conn.transaction():
            for i, (event_id, version, position, raw) in enumerate(items):
                why = reason if i == 0 else f"waiting behind parked event {items[0][0]}"
                await conn.execute(
                    "INSERT INTO fanout_parked (destination, event_id, order_id, version, position,"
                    " envelope, reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (destination, event_id) DO UPDATE SET reason = EXCLUDED.reason,"
                    " detail = EXCLUDED.detail, attempts = fanout_parked.attempts + 1",
                    self.destination,
                    event_id,
                    order_id,
                    version,
                    position,
                    raw,
                    why,
                    detail if i == 0 else None,
                )

    async def parked_events(self, conn: Conn, order_id: str) -> list[ParkedRow]:
        rows = await conn.fetch(
            "SELECT destination, event_id, order_id, version, position, envelope, reason, detail,"
            " attempts, parked_at FROM fanout_parked WHERE destination = $1 AND order_id = $2"
            " ORDER BY version, position",
            self.destination,
            order_id,
        )
        return [ParkedRow(*r) for r in rows]

    async def unpark(self, conn: Conn, event_ids: Sequence[str]) -> None:
        await conn.execute(
            "DELETE FROM fanout_parked WHERE destination = $1 AND event_id = ANY($2::text[])",
            self.destination,
            list(event_ids),
        )

    async def parked_count(self) -> int:
        value = await self.pool.fetchval(
            "SELECT count(DISTINCT order_id) FROM fanout_parked WHERE destination = $1", self.destination
        )
        return int(value or 0)

    async def halt(self, status: int | None, reason: str, detail: Any) -> None:
        await self.pool.execute(
            "INSERT INTO fanout_halts (destination, status, reason, detail) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (destination) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason,"
            " detail = EXCLUDED.detail, halted_at = now()",
            self.destination,
            status,
            reason,
            detail,
        )

    async def current_halt(self) -> Mapping[str, Any] | None:
        """The destination's halt (it survives restarts until an operator lifts it), or None."""
        row = await self.pool.fetchrow(
            "SELECT status, reason, halted_at FROM fanout_halts WHERE destination = $1", self.destination
        )
        return None if row is None else dict(row)

    async def clear_halt(self) -> Mapping[str, Any] | None:
        """Lift the halt (`ledger fanout resume`); returns what it was, or None."""
        row = await self.pool.fetchrow(
            "DELETE FROM fanout_halts WHERE destination = $1 RETURNING status, reason, halted_at",
            self.destination,
        )
        return None if row is None else dict(row)


async def list_parked(
    pool: asyncpg.Pool, destination: str | None = None, order_id: str | None = None
) -> list[dict[str, Any]]:
    """Parked orders with their head event's reason and how many events wait (for the CLI)."""
    rows = await pool.fetch(
        "SELECT DISTINCT ON (destination, order_id) destination, order_id, event_id, version, reason,"
        " detail, attempts, parked_at,"
        " count(*) OVER (PARTITION BY destination, order_id) AS waiting"
        " FROM fanout_parked WHERE ($1::text IS NULL OR destination = $1)"
        " AND ($2::text IS NULL OR order_id = $2)"
        " ORDER BY destination, order_id, version, position",
        destination,
        order_id,
    )
    return [dict(r) for r in rows]


async def list_not_applicable(
    pool: asyncpg.Pool, destination: str | None = None, order_id: str | None = None
) -> list[dict[str, Any]]:
    """Orders a destination cannot take, with the reason (not parked: a later event may fix them)."""
    rows = await pool.fetch(
        "SELECT destination, order_id, not_applicable AS reason, last_version AS version, updated_at"
        " FROM fanout_delivery WHERE not_applicable IS NOT NULL"
        " AND ($1::text IS NULL OR destination = $1) AND ($2::text IS NULL OR order_id = $2)"
        " ORDER BY destination, updated_at, order_id",
        destination,
        order_id,
    )
    return [dict(r) for r in rows]


async def delivery_summary(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Per destination: orders known, parked, not applicable, and the halt if any."""
    rows = await pool.fetch(
        "WITH d AS (SELECT destination, count(*) AS orders,"
        "  count(*) FILTER (WHERE not_applicable IS NOT NULL) AS not_applicable"
        "  FROM fanout_delivery GROUP BY destination),"
        " p AS (SELECT destination, count(DISTINCT order_id) AS parked FROM fanout_parked GROUP BY destination)"
        " SELECT n.destination, coalesce(d.orders, 0) AS orders, coalesce(p.parked, 0) AS parked,"
        "  coalesce(d.not_applicable, 0) AS not_applicable, h.reason AS halted"
        " FROM (SELECT unnest($1::text[]) AS destination) n"
        " LEFT JOIN d USING (destination) LEFT JOIN p USING (destination)"
        " LEFT JOIN fanout_halts h USING (destination) ORDER BY n.destination",
        ["omneo", "omnisend"],
    )
    return [dict(r) for r in rows]


async def order_delivery(pool: asyncpg.Pool, order_id: str) -> list[dict[str, Any]]:
    """One order's delivery state per destination: delivered up to which version, whether the
    destination holds it, why it cannot take it, why it is parked."""
    rows = await pool.fetch(
        "SELECT n.destination, d.last_version AS version, coalesce(d.remote_exists, false) AS remote_exists,"
        " d.not_applicable,"
        " (SELECT reason FROM fanout_parked p WHERE p.destination = n.destination AND p.order_id = $1"
        "  ORDER BY version, position LIMIT 1) AS parked,"
        " d.updated_at"
        " FROM (SELECT unnest($2::text[]) AS destination) n"
        " LEFT JOIN fanout_delivery d ON d.destination = n.destination AND d.order_id = $1"
        " ORDER BY n.destination",
        order_id,
        ["omneo", "omnisend"],
    )
    return [dict(r) for r in rows]


async def delivery_positions(
    db: asyncpg.Pool | Conn, destination: str, order_ids: Sequence[str]
) -> dict[str, tuple[int, str | None, int | None, str | None]]:
    """Per order of `order_ids` the destination knows: (last version delivered, why not applicable,
    the version parked at the head of its queue, and why) for reconciliation (one round trip)."""
    rows = await db.fetch(
        "SELECT o.order_id, coalesce(d.last_version, 0), d.not_applicable, p.version, p.reason"
        " FROM unnest($2::text[]) AS o(order_id)"
        " LEFT JOIN fanout_delivery d ON d.destination = $1 AND d.order_id = o.order_id"
        " LEFT JOIN LATERAL (SELECT version, reason FROM fanout_parked q"
        "  WHERE q.destination = $1 AND q.order_id = o.order_id ORDER BY version, position LIMIT 1) p ON true"
        " WHERE d.order_id IS NOT NULL OR p.version IS NOT NULL",
        destination,
        list(order_ids),
    )
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def list_halts(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM fanout_halts ORDER BY destination")]


def _row_of(destination: str, order_id: str, row: Any) -> DeliveryRow:
    """A `fanout_delivery` row (the columns both reads select) as a DeliveryRow."""
    return DeliveryRow(
        destination,
        order_id,
        row["remote_id"],
        row["remote_exists"],
        row["status"],
        row["last_version"],
        row["last_position"],
        dict(row["sent"]),
        row["not_applicable"],
    )


#: How far back (in log positions) `unhandled_events` looks: a bound on its cost per call.
UNHANDLED_WINDOW = 50_000


async def unhandled_events(
    pool: asyncpg.Pool, destination: str, published_tx: int, published_position: int
) -> int:
    """A destination's backlog in events: events the relay has published (at or below its
    checkpoint `(published_tx, published_position)`) that the destination's worker has neither
    handled (inbox) nor parked, among the last `UNHANDLED_WINDOW` positions of the log. The
    worker's own `ledger_worker_lag_seconds` lives in its process; this is what a database can
    tell (the console's charts sample it)."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM events e"
        " WHERE e.position > (SELECT coalesce(max(position), 0) FROM events) - $4"
        " AND (e.tx, e.position) <= ($2::xid8, $3::bigint)"
        " AND NOT EXISTS (SELECT 1 FROM fanout_inbox i WHERE i.destination = $1 AND i.event_id = e.event_id::text)"
        " AND NOT EXISTS (SELECT 1 FROM fanout_parked p WHERE p.destination = $1 AND p.event_id = e.event_id::text)",
        destination,
        published_tx,
        published_position,
        UNHANDLED_WINDOW,
    )
    return count

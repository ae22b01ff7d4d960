"""Operator actions outside the worker loop: redrive parked orders, replay after a mapping fix.

Redrive: the park queue in Postgres holds each parked order's events in order; redrive feeds
them, oldest first, through the same `Deliverer` the worker uses (same inbox, same state, same
per-order advisory lock, so a running worker and a redrive never deliver one order at once).

Replay: re-delivery from the source of truth, not from Kafka (retention may have dropped it):
the order's stream is read from the Postgres log (`ledger.store` reads) and folded with the
domain, and the latest state is sent again with the destination's `sent` digests cleared, so
every field group, transaction or order body goes out once more regardless of the inbox.
Both mappings are snapshot-based, so "latest state" is the whole effect of the events
(Omneo: PUT + update-create by external_id; Omnisend orders: PUT/POST, carried in v3 batches of
`batch_size` orders, docs/connectors.md#omnisend-batches). In Omnisend events
mode the order's events are sent again with the same eventIDs (the vendor dedupes those only
for historical loads: pause automations first).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import httpx

from consumers.fanout.budget import SharedRateBudget
from consumers.fanout.delivery import Deliverer
from consumers.fanout.delivery_store import Conn, FanoutStore
from consumers.fanout.destinations import build_destination
from consumers.fanout.mapping_types import Envelope
from consumers.fanout.privacy import opener_from_settings
from consumers.fanout.worker import destination_settings
from ledger.repository import ConnectionReader, fold_steps
from ledger_kernel.observability import METRICS, Metrics
from ledger_kernel.settings import Settings
from ledger_kernel.wire.streams import ORDER_STREAM_PREFIX, stream_id_of

__all__ = ["RedriveResult", "redrive", "replay"]

DESTINATIONS = ("omneo", "omnisend")


@dataclass(frozen=True, slots=True)
class RedriveResult:
    destination: str
    order_id: str
    delivered: int
    stopped: str | None


async def redrive(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    destination: str | None = None,
    order_id: str | None = None,
    drop_unreadable: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics = METRICS,
) -> list[RedriveResult]:
    """Retry parked orders (optionally one destination / one order), each in event order."""
    results = []
    for name in [destination] if destination else list(DESTINATIONS):
        rows = await pool.fetch(
            "SELECT DISTINCT order_id FROM fanout_parked WHERE destination = $1"
            " AND ($2::text IS NULL OR order_id = $2) ORDER BY order_id",
            name,
            order_id,
        )
        if not rows:
            continue
        dest = destination_settings(settings, name)
        adapter, http = build_destination(name, dest, transport=transport, pool=pool)
        try:
            budget = SharedRateBudget(pool, name, dest.rate_per_minute)
            deliverer = Deliverer(
                adapter,
                FanoutStore(pool, name),
                dest,
                metrics,
                budget=budget,
                open_envelope=opener_from_settings(pool, settings),
            )
            for row in rows:
                done, stopped = await deliverer.redrive(row["order_id"], drop_unreadable=drop_unreadable)
                results.append(RedriveResult(name, row["order_id"], done, stopped))
        finally:
            await http.aclose()
    return results


async def _envelopes(conn: Conn, order_id: str) -> list[Envelope]:
    """Every event of the order with the state after it, folded from the Postgres log."""
    out = []
    rows = await ConnectionReader(conn).read_stream(stream_id_of(order_id))
    for rec, state in fold_steps(rows):
        out.append(
            Envelope.from_order(
                event_id=str(rec.event_id),
                version=rec.version,
                position=rec.position,
                type_=rec.type,
                recorded_at=rec.recorded_at,
                order=state,
            )
        )
    return out


async def replay(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    destination: str,
    order_id: str | None = None,
    from_position: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    metrics: Metrics = METRICS,
) -> dict[str, int]:
    """Re-send orders to `destination`: one order, or every order with an event at >= position."""
    if (order_id is None) == (from_position is None):
        raise ValueError("give exactly one of order_id or from_position")
    if order_id is not None:
        orders = [order_id]
    else:
        rows = await pool.fetch(
            "SELECT substr(stream_id, length($2) + 1) AS order_id, min(position) AS first FROM events"
            " WHERE position >= $1 AND stream_id LIKE $2 || '%' GROUP BY stream_id ORDER BY first",
            from_position,
            ORDER_STREAM_PREFIX,
        )
        orders = [r["order_id"] for r in rows]
    dest = destination_settings(settings, destination)
    adapter, http = build_destination(destination, dest, transport=transport, pool=pool)
    store = FanoutStore(pool, destination)
    summary = {"orders": 0, "calls": 0, "skipped_parked": 0}
    try:
        budget = SharedRateBudget(pool, destination, dest.rate_per_minute)
        deliverer = Deliverer(
            adapter, store, dest, metrics, budget=budget, open_envelope=opener_from_settings(pool, settings)
        )
        # Batches of orders when the destination takes them (Omnisend v3), else one at a time.
        step = max(1, dest.batch_size) if deliverer.batches else 1
        for start in range(0, len(orders), step):
            chunk = orders[start : start + step]
            # Read the log under the order locks: a live delivery in between would otherwise be
            # overwritten by an older state.
            async with store.orders_lock(chunk) as conn:
                work: list[tuple[str, list[Envelope]]] = []
                for oid in chunk:
                    envs = await _envelopes(conn, oid)
                    if not envs:
                        continue
                    if await store.is_parked(conn, oid):
                        summary["skipped_parked"] += 1
                        continue
                    if from_position is not None and destination == "omnisend" and dest.mode == "events":
                        envs = [e for e in envs if e.position >= from_position]
                    elif destination == "omneo" or dest.mode != "events":
                        envs = envs[-1:]
                    work.append((oid, envs))
                if len(work) > 1:
                    summary["calls"] += await deliverer.replay_many(conn, work)
                else:
                    for oid, envs in work:
                        summary["calls"] += await deliverer.replay_locked(conn, oid, envs)
                summary["orders"] += len(work)
    finally:
        await http.aclose()
    return summary

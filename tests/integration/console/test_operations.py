"""The console's lag readings on a real PostgreSQL: relay, projection and worker backlogs."""

from __future__ import annotations

import asyncpg
import pytest

from consumers.fanout.delivery_store import DeliveryRow, FanoutStore
from ledger.domain.commands import PlaceOrder
from ledger.relay.relay import checkpoint_name
from ledger.service import Actor, OrderService, RequestMeta
from ledger.store import Checkpoint, EventStore
from ledger.store.store import save_checkpoint
from ledger_app.console.operations import LagSampler, sparkline
from projections import order_state
from projections.setup import install_projections

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

TOPIC = "orders.events"


async def place(service: OrderService, n: int) -> list[str]:
    ids = []
    for i in range(n):
        outcome = await service.handle(
            PlaceOrder.model_validate(
                {"currency": "AUD", "total": 10, "items": [{"line_id": "A", "name": f"n{i}", "quantity": 1, "price_sell": 10}]}
            ),
            order_id=None,
            expected_version=None,
            actor=Actor("ops-test", "ops-test"),
            idempotency_key=None,
            meta=RequestMeta(source="http", request_id=f"r{i}", route="test"),
        )
        ids.append(str(outcome.order_id))
    return ids


async def test_a_sample_reads_relay_projection_and_worker_backlogs_from_the_database(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    await install_projections(database_url)
    service = OrderService(store)
    sampler = LagSampler(interval_s=1.0)
    ids = await place(service, 4)

    before = await sampler.sample_once(pool, store, TOPIC, [order_state.PROJECTION])
    assert before.relay is None, "no relay checkpoint yet: the relay has published nothing"
    assert before.workers == {"omneo": None, "omnisend": None}
    assert before.projections == {"order_state": 4}, "installed, no runner: every event is behind"
    assert before.head >= 4

    # the relay published the first three events (its checkpoint), omneo handled one and parked one
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT tx::text::bigint AS tx, position, event_id FROM events ORDER BY position")
        async with conn.transaction():
            await save_checkpoint(conn, checkpoint_name(TOPIC), Checkpoint(rows[2]["tx"], rows[2]["position"]))
    omneo = FanoutStore(pool, "omneo")
    async with omneo.order_lock(ids[0]) as conn:
        await omneo.record(
            conn,
            DeliveryRow("omneo", ids[0], None, True, "ok", 1, rows[0]["position"], {}, None),
            [(str(rows[0]["event_id"]), 1, "delivered", 1)],
        )
    async with omneo.order_lock(ids[1]) as conn:
        await omneo.park(conn, ids[1], [(str(rows[1]["event_id"]), 1, rows[1]["position"], b"{}")], "HTTP 422")

    after = await sampler.sample_once(pool, store, TOPIC, [order_state.PROJECTION])
    assert after.relay == 1, "one event after the relay's checkpoint"
    assert after.workers == {"omneo": 1, "omnisend": 3}, "published, neither handled nor parked"
    assert after.fence_s >= 0.0

    series = sampler.series()
    assert [v for _, v in series["relay lag (events)"]] == [1.0]
    assert [v for _, v in series["worker omneo backlog (events)"]] == [1.0]
    assert len(series["append rate (events/s)"]) == 1
    svg = sparkline(series["projection order_state lag (events)"])
    assert svg.startswith("<svg")
    assert "<polyline" in svg

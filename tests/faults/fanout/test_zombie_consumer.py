"""docs/reliability.md#f11: a fan-out worker frozen (SIGSTOP) in the middle of a call, past its session
timeout, wakes up (SIGCONT) after the group gave its partitions to another worker that went on
delivering: the destination sees no second effect.

Everything is real: orders go in through the HTTP API (in this process), the real relay puts
them on the topic, two `ledger fanout run omneo` processes share one consumer group, and the
Omneo sandbox holds the effects. The history checker (`tests.history`) judges the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from ledger.api.app import create_app
from ledger.api.auth import TokenStore
from ledger.relay import run_relay
from ledger_app.dev.stack import Child
from ledger_kernel.observability import Metrics
from tests.faults.chain.story import EVENTS_PER_ORDER, call, place_orders, steps
from tests.harness.kafka import create_topic, read_to_end
from tests.history.checker import check
from tests.history.sources import history_of, placed_in_ledger
from tests.integration.fanout.support import Sandbox, inbox_count, sandbox, wait_for
from tests.integration.relay.support import relay_settings

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="session"),
]

REPO = Path(__file__).resolve().parents[3]
ORDERS = "/api/v3/orders"


def _worker(
    name: str, database_url: str, bootstrap: str, *, topic: str, group: str, box: Sandbox, logs: Path
) -> Child:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LEDGER_KAFKA__EVENTS_TOPIC": topic,
            "LEDGER_LOG_JSON": "true",
            "LEDGER_OMNEO__BASE_URL": box.url,
            "LEDGER_OMNEO__TOKEN": box.token,
            "LEDGER_OMNEO__GROUP_ID": group,
            "LEDGER_OMNEO__BACKOFF_INITIAL_S": "0.05",
            "LEDGER_OMNEO__BACKOFF_MAX_S": "0.5",
            "LEDGER_OMNEO__RATE_PER_MINUTE": "60000",
            "LEDGER_OMNEO__DEFAULT_LOCATION_ID": "online",  # Omneo requires a location on a Transaction
            # The frozen call must outlive the freeze: a timeout would only make it ambiguous.
            "LEDGER_OMNEO__TIMEOUT_S": "120",
        }
    )
    argv = [sys.executable, "-m", "ledger_app.cli", "fanout", "run", "omneo"]
    child = Child(name, argv, env, logs / f"{name}.log")
    child.start()
    return child


@contextlib.asynccontextmanager
async def _api(
    settings_db: str, pool: asyncpg.Pool, bootstrap: str, topic: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The HTTP API in this process and the real relay beside it, on the test's database."""
    settings = relay_settings(settings_db, bootstrap, topic)
    app = create_app(settings, pool=pool, metrics=Metrics())
    token = (await TokenStore(pool).create("checkout", ["orders:write"]))[0]
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(settings, pool=pool, stop=stop, metrics=Metrics()))
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger") as api,
        ):
            yield api, token
    finally:
        stop.set()
        await asyncio.wait_for(relay, 30)


async def test_a_worker_frozen_past_its_session_timeout_makes_no_second_effect_when_it_wakes(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    await create_topic(kafka_bootstrap, unique_topic, partitions=3)
    group = f"zombie-{uuid.uuid4().hex[:8]}"
    placed: dict[str, str] = {}
    async with (
        sandbox("omneo") as omneo,
        _api(database_url, pool, kafka_bootstrap, unique_topic) as (api, token),
    ):
        a = _worker(
            "worker-a",
            database_url,
            kafka_bootstrap,
            topic=unique_topic,
            group=group,
            box=omneo,
            logs=tmp_path,
        )
        b: Child | None = None
        try:
            # A alone: it owns every partition and delivers a first order.
            await place_orders(api, token, ["ZOMBIE-1"], placed)
            await wait_for(
                lambda: _delivered(pool, EVENTS_PER_ORDER), timeout=90, what="A delivered the first order"
            )

            # The next create hangs at Omneo: A is in the middle of that call, holding the
            # order and an uncommitted batch, when it is frozen.
            await omneo.fault({"hang_seconds": 300, "count": 1, "paths": ORDERS, "methods": "POST"})
            [(method, _, body), *rest] = steps("ZOMBIE-2")
            second = str((await call(api, token, method, ORDERS, body))["id"])
            await wait_for(lambda: _hanging(omneo), timeout=60, what="A's create call in flight")
            assert a.process is not None
            os.kill(a.process.pid, signal.SIGSTOP)
            try:
                await omneo.clear_faults()  # Omneo answers (and creates the order); A is not listening
                b = _worker(
                    "worker-b",
                    database_url,
                    kafka_bootstrap,
                    topic=unique_topic,
                    group=group,
                    box=omneo,
                    logs=tmp_path,
                )
                for method, path, body in rest:  # the frozen order goes on
                    await call(api, token, method, f"{ORDERS}/{second}{path}", body)
                await place_orders(api, token, ["ZOMBIE-3"], placed)
                # B delivers only once the group took A's partitions (A held them all).
                third = placed["ZOMBIE-3"]
                await wait_for(
                    lambda: _delivered_order(pool, third, EVENTS_PER_ORDER), timeout=120,
                    what="B delivered a new order after the rebalance",
                )  # fmt: skip
                # A held every partition, so B's delivery is the proof that the group evicted A
                # (its session expired 6 s after its last heartbeat, which can precede the freeze).
                assert a.alive(), "A was frozen, not dead"
            finally:
                os.kill(a.process.pid, signal.SIGCONT)
            placed["ZOMBIE-2"] = second
            await wait_for(
                lambda: _delivered(pool, 3 * EVENTS_PER_ORDER), timeout=120, what="everything delivered"
            )
            a.stop()
            b.stop()
            omneo_log, omneo_state = await omneo.requests(), await omneo.state()
        finally:
            a.stop()
            if b is not None:
                b.stop()

    records = await read_to_end(kafka_bootstrap, unique_topic)
    assert len(records) == 3 * EVENTS_PER_ORDER
    history = history_of(
        await placed_in_ledger(pool, placed), [r.value for r in records], (omneo_log, omneo_state), None
    )
    report = check(history)
    assert report.ok, report.summary()
    creates = [w for w in history.writes if w.kind == "create"]
    assert len(creates) == 3, "each order created once at Omneo, the frozen one included"
    assert len(history.records) == 6, "two Transactions per order, none twice"


async def _delivered(pool: asyncpg.Pool, events: int) -> bool:
    return await inbox_count(pool, "omneo") >= events


async def _delivered_order(pool: asyncpg.Pool, order_id: str, events: int) -> bool:
    count = await pool.fetchval(
        "SELECT count(*) FROM fanout_inbox WHERE destination = 'omneo' AND order_id = $1", order_id
    )
    return int(count) >= events


async def _hanging(box: Sandbox) -> bool:
    """A request is being held by the sandbox's hang fault right now."""
    return box.app._release is not None

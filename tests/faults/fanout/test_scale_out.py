"""Issue 17 part 4: two replicas of each destination worker on one consumer group of Apache Kafka;
one of each is SIGKILLed mid-flow and started again (two rebalances per group).

Everything is real: orders go in through the HTTP API (in this process), the real relay puts them
on a 3-partition topic, both projections run, and four `ledger fanout run` processes (two per
destination, one group per destination) deliver to the Omneo and Omnisend sandboxes. The history
checker (`tests.history`) judges the outcome: every order at its final state at each destination,
each Omneo Transaction created once, no state older than one already received, nothing lost.
Then `ledger audit reconcile`'s service compares the log with the topic, both read models and
both destinations' delivery state and must find zero mismatches.
"""

# ruff: noqa: PLR0917 - pytest fixtures are positional by nature

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from ledger.api.auth import TokenStore
from ledger.relay import run_relay
from ledger_app.api import create_app
from ledger_app.dev.stack import Child
from ledger_app.reconcile import ReconcileOptions, run_reconciliation
from ledger_kernel.observability import Metrics
from projections import order_state, transactions
from projections.runner import Runner
from tests.conftest import FAULT_COUNTS
from tests.faults.chain.stack import stack_env
from tests.faults.chain.story import EVENTS_PER_ORDER, TRANSACTIONS_PER_ORDER, place_orders
from tests.harness.kafka import create_topic, read_to_end
from tests.history.checker import check
from tests.history.sources import history_of, placed_in_ledger
from tests.integration.fanout.support import inbox_count, sandbox, wait_for
from tests.integration.projections.support import wait_caught_up
from tests.integration.relay.support import relay_settings

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="session"),
]

DESTINATIONS = ("omneo", "omnisend")
BATCHES = (["SCALE-1", "SCALE-2", "SCALE-3", "SCALE-4"], ["SCALE-5", "SCALE-6", "SCALE-7", "SCALE-8"],
           ["SCALE-9", "SCALE-10", "SCALE-11", "SCALE-12"])  # fmt: skip
ORDERS = sum(len(batch) for batch in BATCHES)
PROJECTIONS = (order_state.PROJECTION, transactions.PROJECTION)


@contextlib.asynccontextmanager
async def _ledger(
    database_url: str, pool: asyncpg.Pool, bootstrap: str, topic: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The HTTP API, the relay and both projection runners in this process, on the test's database."""
    settings = relay_settings(database_url, bootstrap, topic)
    app = create_app(settings, pool=pool, metrics=Metrics())
    token = (await TokenStore(pool).create("checkout", ["orders:write"]))[0]
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(settings, pool=pool, stop=stop, metrics=Metrics()))
    runners = [Runner(pool, p, poll_interval_s=0.05, metrics=Metrics()) for p in PROJECTIONS]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger") as api,
        ):
            yield api, token
            for projection in PROJECTIONS:
                await wait_caught_up(pool, projection, timeout=60)
    finally:
        stop.set()
        for runner in runners:
            runner.stop()
        await asyncio.wait_for(asyncio.gather(relay, *tasks), 30)


def _worker(destination: str, replica: str, env: dict[str, str], logs: Path) -> Child:
    name = f"{destination}-{replica}"
    child = Child(
        name,
        [sys.executable, "-m", "ledger_app.cli", "fanout", "run", destination],
        env,
        logs / f"{name}.log",
    )
    child.start()
    return child


def _sigkill(child: Child) -> None:
    assert child.process is not None
    assert child.alive(), f"{child.name} died by itself; see {child.log}"
    os.kill(child.process.pid, signal.SIGKILL)
    child.process.wait(timeout=10)


async def test_two_replicas_per_destination_survive_a_sigkill_and_a_restart_with_every_order_final_once_and_reconciled(
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    unique_topic: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    await create_topic(kafka_bootstrap, unique_topic, partitions=3)
    group = uuid.uuid4().hex[:8]
    placed: dict[str, str] = {}
    rng = random.Random(17)
    workers: dict[str, Child] = {}
    async with sandbox("omneo") as omneo, sandbox("omnisend") as omnisend:
        env = stack_env(
            database_url, kafka_bootstrap, unique_topic, group=group, omneo=omneo, omnisend=omnisend
        )
        try:
            async with _ledger(database_url, pool, kafka_bootstrap, unique_topic) as (api, token):
                for destination in DESTINATIONS:
                    for replica in ("a", "b"):
                        workers[f"{destination}-{replica}"] = _worker(destination, replica, env, tmp_path)
                for destination in DESTINATIONS:
                    await _wait_for_group(kafka_bootstrap, _group(destination, group), members=2)
                # Orders flow; a replica of each destination that is delivering is SIGKILLed (no
                # leave-group: the group notices by its session timeout) and later started again.
                flow = asyncio.create_task(
                    place_orders(api, token, BATCHES[0] + BATCHES[1], placed, rng=rng, max_pause_s=0.05)
                )
                killed: dict[str, str] = {}
                for destination in DESTINATIONS:
                    await wait_for(
                        lambda d=destination: _delivering(workers, d),  # type: ignore[misc]
                        timeout=120,
                        what=f"a replica of {destination} delivering",
                    )
                    name = next(n for n in (f"{destination}-a", f"{destination}-b") if _calls(workers[n]) > 0)
                    _sigkill(workers[name])
                    killed[destination] = name
                mid_flow = not flow.done()
                for destination in DESTINATIONS:  # rebalance 1: the survivor takes every partition
                    await _wait_for_group(kafka_bootstrap, _group(destination, group), members=1)
                await flow
                for destination in DESTINATIONS:  # rebalance 2: the killed replica is back
                    workers[killed[destination] + "2"] = _worker(
                        destination, killed[destination][-1] + "2", env, tmp_path
                    )
                for destination in DESTINATIONS:
                    await _wait_for_group(kafka_bootstrap, _group(destination, group), members=2)
                await place_orders(api, token, BATCHES[2], placed, rng=rng, max_pause_s=0.05)
                for destination in DESTINATIONS:
                    await wait_for(
                        lambda d=destination: _handled_at_least(pool, d, ORDERS * EVENTS_PER_ORDER),  # type: ignore[misc]
                        timeout=180,
                        what=f"{destination} handled every event",
                    )
                for name, child in workers.items():
                    assert name in killed.values() or child.alive(), f"{name} died by itself; see {child.log}"
                    child.stop()
            omneo_log, omneo_state = await omneo.requests(), await omneo.state()
            omnisend_log = await omnisend.requests()
        finally:
            for child in workers.values():
                child.stop()

    records = await read_to_end(kafka_bootstrap, unique_topic)
    history = history_of(
        await placed_in_ledger(pool, placed),
        [r.value for r in records],
        (omneo_log, omneo_state),
        omnisend_log,
    )
    report = check(history)
    parked = await pool.fetchval("SELECT count(*) FROM fanout_parked")
    reconciled = await run_reconciliation(
        pool, ReconcileOptions(bootstrap_servers=kafka_bootstrap, topic=unique_topic, chunk_events=32)
    )
    creates = {
        d: sum(1 for w in history.writes if w.kind == "create" and w.destination == d) for d in DESTINATIONS
    }
    record_property(
        FAULT_COUNTS,
        f"fan-out scale-out: {ORDERS} orders, {len(records)} events, 2 replicas x {len(DESTINATIONS)}"
        f" destinations, SIGKILLed {sorted(killed.values())} (mid-flow: {mid_flow}) and restarted; {report.summary()}; creates {creates};"
        f" Omneo Transactions {len(history.records)}; parked {parked};"
        f" reconcile mismatches {reconciled.mismatch_count}",
    )
    assert len(records) == ORDERS * EVENTS_PER_ORDER
    assert report.ok, report.summary()
    assert creates == dict.fromkeys(DESTINATIONS, ORDERS), "each order created once at each destination"
    assert len(history.records) == ORDERS * TRANSACTIONS_PER_ORDER, "every Transaction once"
    assert parked == 0
    assert reconciled.ok, reconciled.as_json()
    assert reconciled.counts["log"]["orders"] == ORDERS
    for destination in DESTINATIONS:
        assert reconciled.counts[f"destination:{destination}"]["delivered"] == ORDERS


async def _handled_at_least(pool: asyncpg.Pool, destination: str, events: int) -> bool:
    return await inbox_count(pool, destination) >= events


def _group(destination: str, group: str) -> str:
    return f"chain-{destination}-{group}"  # tests/faults/chain/stack.py's group ids


def _calls(child: Child) -> int:
    """Calls the replica made to its destination so far (httpx logs each one)."""
    return child.log.read_text(errors="replace").count("HTTP Request:") if child.log.exists() else 0


async def _delivering(workers: dict[str, Child], destination: str) -> bool:
    return any(_calls(workers[f"{destination}-{r}"]) > 0 for r in ("a", "b"))


async def _assignment(bootstrap: str, group: str) -> tuple[str, list[int]]:
    """The group's state and how many partitions each member holds."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    described = responses[0].to_object()["groups"][0]
    held = [
        len(ConsumerProtocolMemberAssignment.decode(m["member_assignment"]).partitions())
        if m["member_assignment"]
        else 0
        for m in described["members"]
    ]
    return described["state"], held


async def _wait_for_group(bootstrap: str, group: str, *, members: int) -> None:
    """Until the group is stable with `members` members holding the topic's 3 partitions between them."""

    async def settled() -> bool:
        try:
            state, held = await _assignment(bootstrap, group)
        except KafkaError:  # no coordinator yet: the group's first member is still starting
            return False
        return state == "Stable" and len(held) == members and all(held) and sum(held) == 3

    await wait_for(settled, timeout=120, interval=0.25, what=f"{group} stable with {members} member(s)")

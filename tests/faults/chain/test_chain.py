"""The chain tier: HTTP API -> event store -> real relay -> Kafka -> real fan-out workers ->
sandboxes, while the relay, the projections runner and both workers are SIGKILLed again and
again and PostgreSQL is crashed once and frozen once. Afterwards one checker
(`tests.history.checker`) looks at the whole history: nothing lost, duplicated, reordered or
stuck, for any order at any destination.

PostgreSQL is a server of the tier's own (`PrivatePostgres`: the session's server is shared and
may not be taken away); Kafka is the session's broker. The kill schedule is seeded (three seeds,
`LEDGER_TEST_SEED` shifts them); a process that dies is started again at once, as a process
manager would. Clients retry through every outage with the same `Idempotency-Key`.
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from ledger.api.auth import TokenStore
from ledger_app.reconcile import ReconcileOptions, run_reconciliation
from projections import order_state, transactions
from tests.conftest import FAULT_COUNTS
from tests.harness.kafka import create_topic, read_to_end
from tests.harness.private_postgres import PrivatePostgres
from tests.history.checker import History, Report, check
from tests.history.sources import history_of, placed_in_ledger
from tests.integration.fanout.support import Sandbox, sandbox
from tests.integration.projections.support import assert_matches_fold
from tests.integration.relay.support import check_topic, committed_events

from .stack import VICTIMS, ChainStack, stack_env
from .story import EVENTS_PER_ORDER, TRANSACTIONS_PER_ORDER, place_orders

# ruff: noqa: PLR0917 - pytest fixtures are positional by nature
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="session"),
]

BASE_SEED = int(os.environ.get("LEDGER_TEST_SEED", "20261207"))
ORDERS = 16
CLIENTS = 4
MIN_KILLS = 20


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """Not under pytest's tmp_path: each pytest run makes `pytest-of-<user>` private to its user
    again, and as root the server runs as another user that must keep reaching its data."""
    with tempfile.TemporaryDirectory(prefix="ledger-chain-pg-") as folder:
        server = PrivatePostgres(Path(folder)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def chain_database(private_postgres: PrivatePostgres) -> AsyncIterator[str]:
    yield await private_postgres.create_database(f"chain_{uuid.uuid4().hex[:8]}")


async def _chaos(
    stack: ChainStack, pg: PrivatePostgres, rng: random.Random, clients: asyncio.Future[Any], log: list[str]
) -> None:
    """SIGKILL a seeded victim every few hundred ms (restarting what died) until at least
    `MIN_KILLS` kills and the clients are done; crash PostgreSQL after the 6th kill and freeze
    it after the 13th."""
    kills = 0
    while kills < MIN_KILLS or not clients.done():
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        victim = rng.choice(VICTIMS)
        stack.kill(victim)
        kills += 1
        log.append(f"kill {victim}")
        if kills == 6:
            pg.crash()
            log.append("postgres crash")
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            pg.start_again()
            log.append("postgres started")
        if kills == 13:
            frozen = pg.freeze()
            log.append("postgres frozen")
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            pg.thaw(frozen)
            log.append("postgres thawed")
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        stack.revive()


async def _history_report(
    pool: asyncpg.Pool, bootstrap: str, topic: str, placed: list[str], *, omneo: Sandbox, omnisend: Sandbox
) -> tuple[Report, History]:
    records = await read_to_end(bootstrap, topic)
    history = history_of(
        await placed_in_ledger(pool, placed),
        [r.value for r in records],
        (await omneo.requests(), await omneo.state()),
        await omnisend.requests(),
    )
    return check(history), history


@pytest.mark.parametrize("seed", [BASE_SEED, BASE_SEED + 1, BASE_SEED + 2])
async def test_kills_and_a_database_crash_and_stall_lose_duplicate_reorder_and_strand_nothing(
    seed: int,
    private_postgres: PrivatePostgres,
    chain_database: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    rng = random.Random(seed)
    crashes, freezes = private_postgres.crashes, private_postgres.freezes  # the server serves every seed
    topic = f"chain-{uuid.uuid4().hex[:10]}"
    await create_topic(kafka_bootstrap, topic, partitions=3)
    external_ids = [f"CHAIN-{seed}-{i:03d}" for i in range(ORDERS)]
    placed: dict[str, str] = {}
    chaos_log: list[str] = []
    async with sandbox("omneo") as omneo, sandbox("omnisend") as omnisend:
        env = stack_env(
            chain_database, kafka_bootstrap, topic, group=uuid.uuid4().hex[:8], omneo=omneo, omnisend=omnisend
        )
        stack = ChainStack(env, tmp_path)
        await asyncio.to_thread(stack.migrate)
        pool = await asyncpg.create_pool(chain_database, min_size=1, max_size=3)
        try:
            token = (await TokenStore(pool).create("chain", ["orders:write"]))[0]
            stack.start()
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as api:
                clients = asyncio.gather(
                    *(
                        place_orders(
                            api,
                            token,
                            external_ids[i::CLIENTS],
                            placed,
                            rng=random.Random(rng.random()),
                            max_pause_s=0.6,
                        )
                        for i in range(CLIENTS)
                    )
                )
                try:
                    await _chaos(stack, private_postgres, rng, clients, chaos_log)
                    await clients
                finally:
                    clients.cancel()
            chaos_s = time.monotonic() - started
            stack.revive()
            # Settle: every process up and left alone until the checker has nothing stuck
            # (or two minutes pass; then the report below says what is stuck).
            await private_postgres.answers()
            deadline = time.monotonic() + 120
            while True:
                report, history = await _history_report(
                    pool, kafka_bootstrap, topic, external_ids, omneo=omneo, omnisend=omnisend
                )
                if report.ok or time.monotonic() > deadline:
                    break
                stack.revive()
                await asyncio.sleep(1.0)
            settle_s = time.monotonic() - started - chaos_s
            committed = await committed_events(pool)
            topic_check = check_topic(await read_to_end(kafka_bootstrap, topic), committed)
            kills = sum(stack.kills.values())
            writes = Counter(w.destination for w in history.writes)
            counts = (
                f"chain seed={seed} orders={len(placed)} events={len(committed)} topic_records={topic_check.records}"
                f" writes={dict(writes)} transactions={len(history.records)}"
                f" chaos={chaos_s:.0f}s settle={settle_s:.0f}s"
                f" kills={kills} ({stack.kills}) exited_by_themselves={stack.exited_by_themselves()}"
                f" pg_crashes={private_postgres.crashes - crashes} pg_freezes={private_postgres.freezes - freezes}"
                f" lost={len(report.lost)} duplicated={len(report.duplicated)}"
                f" reordered={len(report.reordered)} stuck={len(report.stuck)}"
            )
            print(counts)
            record_property(FAULT_COUNTS, counts)
            if not report.ok:
                print(stack.tail())
            assert report.ok, report.summary()
            # The checker had something to check: every order reached both destinations.
            assert len(history.expected) == 2 * ORDERS
            assert len(history.records) == TRANSACTIONS_PER_ORDER * ORDERS
            assert topic_check.ok, topic_check
            assert kills >= MIN_KILLS
            assert private_postgres.crashes - crashes == 1
            assert private_postgres.freezes - freezes == 1
            assert len(placed) == ORDERS
            assert len(committed) == ORDERS * EVENTS_PER_ORDER
            await _projections_caught_up(pool)
            for projection in (order_state.PROJECTION, transactions.PROJECTION):
                await assert_matches_fold(pool, projection)
            # `ledger audit reconcile`'s service agrees: nothing missed on the topic, in a read
            # model or at a destination, after all the kills.
            reconciled = await run_reconciliation(
                pool, ReconcileOptions(bootstrap_servers=kafka_bootstrap, topic=topic, chunk_events=64)
            )
            print(f"chain seed={seed} reconcile mismatches={reconciled.mismatch_count} counts={reconciled.counts}")
            assert reconciled.ok, reconciled.as_json()
            assert reconciled.counts["log"]["orders"] == ORDERS
        finally:
            stack.stop()
            await pool.close()


async def _projections_caught_up(pool: asyncpg.Pool, timeout_s: float = 120) -> None:
    """The projections runner (killed too) reached the log head for both projections."""
    from ledger.store import load_checkpoint

    head = await pool.fetchrow("SELECT tx, position FROM events ORDER BY tx DESC, position DESC LIMIT 1")
    assert head is not None
    deadline = time.monotonic() + timeout_s
    for projection in (order_state.PROJECTION, transactions.PROJECTION):
        while (cp := await load_checkpoint(pool, projection.checkpoint_name())) is None or (
            cp.tx,
            cp.position,
        ) < (head["tx"], head["position"]):
            assert time.monotonic() < deadline, f"{projection.name} stuck at {cp}"
            await asyncio.sleep(0.2)

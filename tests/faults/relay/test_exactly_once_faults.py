"""Exactly-once publication under SIGKILLs and a zombie relay (docs/reliability.md#f29).

The relay runs as a process in exactly-once mode (`LEDGER_RELAY__EXACTLY_ONCE=true`, ledger/relay/
eos.py) on Apache Kafka while writers append through the store. It SIGKILLs itself at the named
moments of its transaction (`crashing_relay`: after produce, mid-transaction, after commit,
before the PostgreSQL checkpoint, after it), at least ten times; then a relay that never takes
the advisory lock (a zombie, `crashing_relay zombie`) publishes beside the writers until a
normal relay starts against the same topic and fences it. A `read_committed` consumer must see
every committed event exactly once, in version order per order.
"""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import asyncpg
import pytest

from ledger.relay import checkpoint_name
from ledger.relay.eos import read_checkpoint
from ledger.store import EventStore
from ledger_kernel.settings import Settings
from tests.faults.relay.crashing_relay import EXIT_FENCED
from tests.faults.relay.test_relay_faults import (
    SEED,
    RelayProcess,
    crash_marks,
    relay_log,  # noqa: F401 - fixture
    saved_checkpoint,
    wait_caught_up,
    writer,
)
from tests.harness.kafka import kafka_choice, read_to_end
from tests.integration.relay.support import check_topic, committed_events, relay_settings, settled_head

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.skipif(kafka_choice() == "tansu", reason="exactly-once needs a broker with transactions"),
]
# ruff: noqa: PLR0917 - pytest fixtures are positional by nature

EOS_POINTS = ("after_produce", "mid_transaction", "after_commit", "before_pg_checkpoint", "after_checkpoint")
KILLS = 12
BACKLOG = 600


def eos_settings(database_url: str, bootstrap: str, topic: str) -> Settings:
    settings = relay_settings(database_url, bootstrap, topic, batch_size=25)
    settings.relay.exactly_once = True
    return settings


async def test_sigkills_at_every_transaction_step_and_a_fenced_zombie_leave_each_event_exactly_once(
    store: EventStore,
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    unique_topic: str,
    relay_log: Path,  # noqa: F811 - fixture
) -> None:
    rng = random.Random(f"{SEED}-eos")
    settings = eos_settings(database_url, kafka_bootstrap, unique_topic)
    errors: list[str] = []
    # A backlog, so the publish a run dies in always comes; writers go on until the end.
    await writer(store, random.Random(rng.random()), [BACKLOG], pause_s=0, errors=errors)
    budget = [10**9]
    writers = [
        asyncio.create_task(writer(store, random.Random(rng.random()), budget, pause_s=0.05, errors=errors))
        for _ in range(3)
    ]
    kills = 0
    zombie = RelayProcess(settings, relay_log, module="tests.faults.relay.crashing_relay zombie 0")
    successor = RelayProcess(settings, relay_log)
    try:
        for run in range(KILLS):
            point = EOS_POINTS[run % len(EOS_POINTS)]
            crashing = RelayProcess(
                settings, relay_log, module=f"tests.faults.relay.crashing_relay {point} {rng.randint(1, 3)}"
            )
            crashing.start()
            assert await crashing.exited(timeout_s=60) == -signal.SIGKILL
            kills += 1
        # A zombie: publishes without the lock. A normal relay starting on the topic fences it;
        # its next publish is refused and it exits (the transaction it had open is aborted).
        zombie.start()
        await zombie.started(timeout_s=30)
        before = await saved_checkpoint(pool, unique_topic)
        deadline = asyncio.get_running_loop().time() + 30
        while await saved_checkpoint(pool, unique_topic) == before:  # it published at least once
            assert asyncio.get_running_loop().time() < deadline, "the zombie never published"
            await asyncio.sleep(0.05)
        successor.start()
        assert await zombie.exited(timeout_s=60) == EXIT_FENCED
        budget[0] = 0
        await asyncio.gather(*writers)
        await successor.started(timeout_s=30)
        await wait_caught_up(pool, store, unique_topic, timeout_s=90)
        assert successor.terminate() == 0
    finally:
        budget[0] = 0
        for w in writers:
            w.cancel()
        for process in (zombie, successor):
            process.stop_quietly()
    assert not errors
    for point in EOS_POINTS:
        assert crash_marks(relay_log, point) >= 2, point
    assert "zombie_fenced" in relay_log.read_text()  # noqa: ASYNC240 - a small local file

    committed = await committed_events(pool)
    records = await read_to_end(kafka_bootstrap, unique_topic, isolation_level="read_committed")
    check = check_topic(records, committed)
    written = await read_to_end(kafka_bootstrap, unique_topic)  # aborted transactions included
    head = await settled_head(pool)
    in_kafka = await read_checkpoint(
        kafka_bootstrap, f"{unique_topic}.checkpoints", checkpoint_name(unique_topic), 10_000
    )
    print(
        f"exactly-once: events={len(committed)} kills={kills} zombies_fenced=1 lost={len(check.missing)}"
        f" duplicates={check.duplicates} inversions={len(check.out_of_order)}"
        f" records_read_committed={check.records} records_written_incl_aborted={len(written)}"
    )
    assert kills >= 10
    assert not check.missing
    assert check.duplicates == 0
    assert not check.out_of_order
    assert not check.wrong_key
    assert check.records == len(committed)
    assert in_kafka is not None
    assert in_kafka.checkpoint == head
    assert await saved_checkpoint(pool, unique_topic) == head  # PostgreSQL caught up, never ahead

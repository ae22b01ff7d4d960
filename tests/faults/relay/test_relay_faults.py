"""The relay as a process under faults: SIGKILL at random moments, SIGTERM, the broker going away.

docs/reliability.md#f1 and #f8. The relay runs as `python -m ledger.relay` with settings from the
environment, exactly as deployed; the tests append through the store directly (the write path
never involves Kafka) and check the topic against the committed log with `check_topic`.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from ledger.api.auth import TokenStore
from ledger.relay import checkpoint_name
from ledger.store import NO_STREAM, Checkpoint, EventStore
from ledger_app.api import create_app
from ledger_app.dev.broker import free_port
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import Settings
from tests.harness.kafka import CuttableBroker
from tests.integration.relay.support import (
    TopicCheck,
    check_topic,
    committed_events,
    placed,
    read_to_end,
    relay_env,
    relay_settings,
    settled_head,
    status,
    stream_of,
)

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow]
# ruff: noqa: PLR0917 - pytest fixtures are positional by nature

REPO = Path(__file__).resolve().parents[3]
SEED = int(os.environ.get("LEDGER_TEST_SEED", "20261122"))
TOTAL_EVENTS = 10_000
WRITERS = 6
MIN_KILLS = 10
CRASH_POINTS = ("after_read", "after_produce", "mid_batch", "after_ack", "after_checkpoint")
NAMED_CRASH_EVENTS = 1_500
NAMED_CRASH_RUNS = 3
#: The outage the issue asks for. Long enough to outlast the producer's request timeout and
#: several back-off rounds at the cap, so "no hot loop" is checked on the steady state.
OUTAGE_S = 30.0


class RelayProcess:
    """`python -m ledger.relay` with the test's settings; output goes to a log file."""

    def __init__(
        self, settings: Settings, log: Path, metrics_port: int | None = None, module: str = "ledger.relay"
    ) -> None:
        self.env = {**os.environ, **relay_env(settings), "PYTHONPATH": str(REPO)}
        self.args = [sys.executable, "-m", *module.split()]
        if metrics_port is not None:
            self.args += ["--metrics-port", str(metrics_port)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._baseline = 0

    def _resumes(self) -> int:
        return self.log.read_bytes().count(b"relay.resuming") if self.log.exists() else 0

    def start(self) -> RelayProcess:
        self._baseline = self._resumes()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    async def started(self, timeout_s: float = 20.0) -> None:
        """Wait until this run logged that it resumed (signal handlers are installed by then)."""
        deadline = time.monotonic() + timeout_s
        while self._resumes() <= self._baseline:
            assert time.monotonic() < deadline, "relay did not start"
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def exited(self, timeout_s: float = 30.0) -> int:
        """Wait for the process to end by itself; its return code."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, "the relay did not exit"
            await asyncio.sleep(0.05)
        return code

    def terminate(self, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


async def drain(settings: Settings, log: Path, pool: asyncpg.Pool, store: EventStore) -> None:
    """A relay run left alone until it caught up with the log, then stopped with SIGTERM."""
    relay = RelayProcess(settings, log).start()
    try:
        await relay.started()
        await wait_caught_up(pool, store, settings.kafka.events_topic, timeout_s=60)
        assert relay.terminate() == 0
    finally:
        relay.stop_quietly()


async def checked_topic(pool: asyncpg.Pool, bootstrap: str, topic: str) -> tuple[TopicCheck, int]:
    """The topic against the committed log (docs/reliability.md#f1's pass criteria, asserted), and how
    many events were committed."""
    committed = await committed_events(pool)
    check = check_topic(await read_to_end(bootstrap, topic), committed)
    assert check.ok, (
        check.missing and list(check.missing)[:5],
        check.out_of_order[:5],
        check.differing_duplicates[:5],
    )
    return check, len(committed)


def crash_marks(log: Path, point: str) -> int:
    """How many runs logged that they crashed themselves at `point` (`crashing_relay`)."""
    return log.read_text().count(f"crash_point={point} ")


@pytest.fixture
def relay_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "relay.log"
    yield log
    if log.exists():  # shown by pytest only when the test fails
        print(log.read_text()[-5000:])


async def saved_checkpoint(pool: asyncpg.Pool, topic: str) -> Checkpoint | None:
    row = await pool.fetchrow("SELECT tx, position FROM checkpoints WHERE name = $1", checkpoint_name(topic))
    return None if row is None else Checkpoint(row["tx"], row["position"])


async def wait_caught_up(pool: asyncpg.Pool, store: EventStore, topic: str, timeout_s: float) -> float:
    """Seconds until the saved checkpoint reaches the log head (fails after `timeout_s`)."""
    start = time.monotonic()
    head = await settled_head(pool)
    while (cp := await saved_checkpoint(pool, topic)) is None or cp < head:
        assert time.monotonic() - start < timeout_s, f"relay at {cp}, head {head} after {timeout_s}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def writer(
    store: EventStore, rng: random.Random, budget: list[int], pause_s: float, errors: list[str]
) -> None:
    """Appends 1-3 events at a time to its own orders (new or existing) until the budget is spent."""
    versions: dict[uuid.UUID, int] = {}
    while budget[0] > 0:
        if not versions or rng.random() < 0.25:
            order_id = uuid.uuid4()
            events = [placed(order_id)] + [status(f"s{i}") for i in range(rng.randint(0, 2))]
            expected: int = NO_STREAM
        else:
            order_id = rng.choice(list(versions))
            events = [status(f"s{versions[order_id] + i}") for i in range(rng.randint(1, 3))]
            expected = versions[order_id]
        budget[0] -= len(events)
        try:
            result = await store.append(stream_of(order_id), events, expected)
        except Exception as exc:  # every append must succeed: the write path never waits for Kafka
            errors.append(repr(exc))
            continue
        versions[order_id] = result.version
        await asyncio.sleep(pause_s * rng.uniform(0.5, 1.5))


async def http_writer(api: httpx.AsyncClient, token: str, stop: asyncio.Event, statuses: list[int]) -> None:
    """Places orders through the HTTP API, one every ~50 ms, recording every status code."""
    body = {"total": 12.5, "items": [{"name": "Sock", "quantity": 1, "price_sell": 12.5}]}
    while not stop.is_set():
        response = await api.post("/api/v3/orders", json=body, headers={"Authorization": f"Bearer {token}"})
        statuses.append(response.status_code)
        await asyncio.sleep(0.05)


async def test_sigkill_at_random_moments_loses_nothing_keeps_order_and_duplicates_are_identical(
    store: EventStore,
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    unique_topic: str,
    relay_log: Path,
) -> None:
    """docs/reliability.md#f1: at-least-once with per-order order, across at least ten SIGKILLs."""
    rng = random.Random(SEED)
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=100)
    budget = [TOTAL_EVENTS]
    errors: list[str] = []
    # ~10k events over ~12 s from six writers, so the kills land while the log grows.
    writers = [
        asyncio.create_task(writer(store, random.Random(rng.random()), budget, pause_s=0.006, errors=errors))
        for _ in range(WRITERS)
    ]
    relay = RelayProcess(settings, relay_log)
    kills = 0
    try:
        while kills < MIN_KILLS or not all(w.done() for w in writers):
            relay.start()
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0.0, 1.0))  # often before it even connected
            else:
                await relay.started()  # then kill it while it catches up with what came meanwhile
                await asyncio.sleep(rng.uniform(0.0, 0.6))
            relay.kill()
            kills += 1
        await asyncio.gather(*writers)
        await drain(settings, relay_log, pool, store)  # the last run is left alone to drain the log
    finally:
        for w in writers:
            w.cancel()
        relay.stop_quietly()
    assert not errors
    check, committed = await checked_topic(pool, kafka_bootstrap, unique_topic)
    assert committed >= TOTAL_EVENTS
    assert kills >= MIN_KILLS
    print(f"kills={kills} committed={committed} records={check.records} duplicates={check.duplicates}")


@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_sigkill_at_a_named_crash_point_loses_nothing_keeps_order_and_duplicates_are_identical(
    store: EventStore,
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    unique_topic: str,
    relay_log: Path,
    point: str,
) -> None:
    """docs/reliability.md#f1's named crash points (see `crashing_relay`): the relay SIGKILLs itself there,
    a few times at seeded batches while writers append, then a clean run drains the log."""
    rng = random.Random(f"{SEED}-{point}")
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=40)
    errors: list[str] = []
    # A backlog first, so the batch a run crashes in always comes; then writers keep appending.
    await writer(store, random.Random(rng.random()), [NAMED_CRASH_EVENTS // 2], pause_s=0, errors=errors)
    budget = [NAMED_CRASH_EVENTS // 2]
    writers = [
        asyncio.create_task(writer(store, random.Random(rng.random()), budget, pause_s=0.01, errors=errors))
        for _ in range(3)
    ]
    try:
        for _ in range(NAMED_CRASH_RUNS):
            crashing = RelayProcess(
                settings, relay_log, module=f"tests.faults.relay.crashing_relay {point} {rng.randint(1, 4)}"
            )
            crashing.start()
            assert await crashing.exited() == -signal.SIGKILL
        await asyncio.gather(*writers)
        await drain(settings, relay_log, pool, store)
    finally:
        for w in writers:
            w.cancel()
    assert not errors
    assert crash_marks(relay_log, point) == NAMED_CRASH_RUNS
    check, _ = await checked_topic(pool, kafka_bootstrap, unique_topic)
    if point == "after_ack":  # acknowledged, not checkpointed: published again, byte for byte
        assert check.duplicates > 0


async def test_sigterm_finishes_the_batch_in_flight_and_exits_cleanly(
    store: EventStore,
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    unique_topic: str,
    relay_log: Path,
) -> None:
    """SIGTERM arrives while the second publish is in flight (`crashing_relay term_in_publish`):
    that batch is acknowledged and checkpointed, nothing after it is started, exit 0."""
    settings = relay_settings(database_url, kafka_bootstrap, unique_topic, batch_size=50)
    ids = [uuid.uuid4() for _ in range(300)]
    for order_id in ids:
        await store.append(stream_of(order_id), [placed(order_id), status("a")], NO_STREAM)
    relay = RelayProcess(settings, relay_log, module="tests.faults.relay.crashing_relay term_in_publish 2")
    relay.start()
    try:
        assert await relay.exited() == 0
    finally:
        relay.stop_quietly()
    log = relay_log.read_text()  # noqa: ASYNC240 - a small local file
    mark = re.search(r"term_in_publish n=2 before=(\d+) records=(\d+)", log)
    assert mark is not None, "the signal came while a batch was in flight"
    before, in_flight = int(mark[1]), int(mark[2])
    assert before > 0
    assert in_flight > 0
    saved = await saved_checkpoint(pool, unique_topic)
    assert saved is not None
    records = await read_to_end(kafka_bootstrap, unique_topic)
    # The batch in flight was finished and nothing after it was started: exactly the two
    # publishes are on the topic, each record once, and all of them are checkpointed.
    assert len(records) == before + in_flight
    assert len({r.value for r in records}) == len(records)
    upto = await pool.fetchval(
        "SELECT count(*) FROM events WHERE (tx, position) <= ($1::xid8, $2::bigint)", saved.tx, saved.position
    )
    assert upto == len(records)
    assert "relay.stopped" in log


def broker_errors(samples: dict[str, float]) -> float:
    """Failed publish attempts so far, all kinds (`ledger_relay_broker_errors_total`)."""
    return sum(v for k, v in samples.items() if k.startswith("ledger_relay_broker_errors_total{"))


def scrape(port: int) -> dict[str, float]:
    """Prometheus text exposition as {sample name with labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def test_broker_outage_appends_continue_relay_backs_off_quietly_and_drains_after_restore(
    store: EventStore,
    pool: asyncpg.Pool,
    database_url: str,
    cuttable_broker: CuttableBroker,
    unique_topic: str,
    relay_log: Path,
) -> None:
    """docs/reliability.md#f8 with a 30 s outage: no lost event, order kept, CPU near idle while away."""
    rng = random.Random(SEED + 1)
    bootstrap = cuttable_broker.bootstrap_servers
    # backoff_max_s=2 bounds how long after restore the next attempt comes (production: 10 s).
    settings = relay_settings(
        database_url, bootstrap, unique_topic, backoff_max_s=2.0, request_timeout_ms=3000, batch_size=200
    )
    port = free_port()
    relay = RelayProcess(settings, relay_log, metrics_port=port).start()
    await relay.started()
    budget = [10**9]
    errors: list[str] = []
    writers = [
        asyncio.create_task(writer(store, random.Random(rng.random()), budget, pause_s=0.1, errors=errors))
        for _ in range(3)
    ]  # ~40 events/s
    # The HTTP API in this process, on the same database, placing orders throughout.
    app = create_app(settings, pool=pool, metrics=Metrics())
    token = (await TokenStore(pool).create("checkout", ["orders:write"]))[0]
    http_stop = asyncio.Event()
    http_statuses: list[int] = []
    outage_statuses: list[int] = []
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger") as api,
    ):
        http_task = asyncio.create_task(http_writer(api, token, http_stop, http_statuses))
        try:
            await asyncio.sleep(2.0)
            await wait_caught_up(pool, store, unique_topic, timeout_s=15)
            committed_before = len(await committed_events(pool))
            errors_before = broker_errors(scrape(port))
            cuttable_broker.cut()
            cpu_start, t_start = relay.cpu_seconds(), time.monotonic()
            http_before = len(http_statuses)
            await asyncio.sleep(OUTAGE_S)
            outage_statuses = http_statuses[http_before:]
            cpu_used, elapsed = relay.cpu_seconds() - cpu_start, time.monotonic() - t_start
            during = scrape(port)
            committed_during = len(await committed_events(pool)) - committed_before
            cuttable_broker.restore()
            restored = time.monotonic()
            await asyncio.sleep(1.0)
            budget[0] = 0
            http_stop.set()
            await asyncio.gather(*writers, http_task)
            await wait_caught_up(pool, store, unique_topic, timeout_s=30)
            drain_s = time.monotonic() - restored
            assert relay.terminate() == 0
        finally:
            for w in [*writers, http_task]:
                w.cancel()
            relay.stop_quietly()
    assert not errors  # appends never waited for Kafka
    assert outage_statuses, "the HTTP API kept accepting orders while the broker was away"
    assert set(http_statuses) == {201}
    assert committed_during > 0  # appends went on during the outage
    # No hot loop, counted rather than timed: each failed attempt waits at least half the capped
    # back-off, so the outage allows at most this many (a loaded machine only makes fewer).
    attempts = broker_errors(during) - errors_before
    ramp = 10  # the doublings from backoff_initial_s up to the cap
    assert 1 <= attempts <= OUTAGE_S / (settings.relay.backoff_max_s / 2) + ramp, attempts
    assert during["ledger_relay_lag_seconds"] > OUTAGE_S / 2  # the "oldest unpublished" alert would fire
    assert during["ledger_relay_lag_events"] > 0
    committed = await committed_events(pool)
    records = await read_to_end(bootstrap, unique_topic)
    check = check_topic(records, committed)
    assert check.ok, (list(check.missing)[:5], check.out_of_order[:5], check.differing_duplicates[:5])
    print(
        f"outage={elapsed:.1f}s broker_attempts={attempts} relay_cpu={cpu_used:.2f}s ({cpu_used / elapsed:.1%},"
        f" a figure, not a gate) appended_during={committed_during}"
        f" caught_up_after_restore={drain_s:.1f}s (appends went on for 1 s of it) duplicates={check.duplicates}"
    )

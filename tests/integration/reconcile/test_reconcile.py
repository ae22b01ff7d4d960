"""`ledger audit reconcile` finds each kind of mismatch made on purpose, and none in a clean pipeline.

Real PostgreSQL and Apache Kafka: orders appended to the log, the real relay publishing them to
a per-test topic, the real projection runners catching up. Delivery state is what the fan-out
workers write (`fanout_delivery`), recorded here as delivered at each order's last version; the
fault tier (tests/faults/fanout/test_scale_out.py) reconciles after real workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from ledger.api.auth import TokenStore
from ledger.relay import checkpoint_name, run_relay
from ledger.relay.publisher import ensure_topic
from ledger.store import EventStore, load_checkpoint
from ledger_app.api import create_app
from ledger_app.reconcile import Mismatch, ReconcileOptions, latest_report, run_reconciliation
from ledger_app.reconcile.report import MISSING, OUT_OF_ORDER, READ_MODEL_DIFFERS, UNDELIVERED
from ledger_kernel.observability import Metrics
from projections import order_state, transactions
from projections.runner import Runner
from projections.simulate import HistoryGenerator
from tests.harness.kafka import create_topic, produce, read_to_end
from tests.integration.projections.support import append_interleaved, wait_caught_up, wait_fenced
from tests.integration.relay.support import relay_settings

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.asyncio(loop_scope="session")]

ROOT = Path(__file__).resolve().parents[3]
ORDERS = 24
KAFKA = "kafka:"


async def _pipeline(
    pool: asyncpg.Pool, store: EventStore, database_url: str, bootstrap: str, topic: str
) -> int:
    """Orders in the log, on the topic (real relay) and in both read models (real runners);
    delivered to both destinations per `fanout_delivery`. Returns the number of events."""
    events = await append_interleaved(store, HistoryGenerator(seed=7).histories(ORDERS), seed=7)
    await wait_fenced(pool)
    settings = relay_settings(database_url, bootstrap, topic)
    await ensure_topic(bootstrap, topic, 3, 5_000)
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(settings, pool=pool, stop=stop, metrics=Metrics()))
    runners = [
        Runner(pool, p, batch_size=50, poll_interval_s=0.02, metrics=Metrics())
        for p in (order_state.PROJECTION, transactions.PROJECTION)
    ]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        head = await pool.fetchval("SELECT max(position) FROM events")
        async with asyncio.timeout(30):
            while (cp := await load_checkpoint(pool, checkpoint_name(topic))) is None or cp.position < head:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        for p in (order_state.PROJECTION, transactions.PROJECTION):
            await wait_caught_up(pool, p)
    finally:
        stop.set()
        for r in runners:
            r.stop()
        await asyncio.wait_for(asyncio.gather(relay, *tasks), 30)
    await pool.execute(
        "INSERT INTO fanout_delivery (destination, order_id, last_version, last_position)"
        " SELECT d, substr(stream_id, 7), max(version), max(position)"
        " FROM events, unnest(ARRAY['omneo', 'omnisend']) AS d GROUP BY d, stream_id"
    )
    return events


def _options(bootstrap: str, topic: str, **overrides: object) -> ReconcileOptions:
    values: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "topic": topic,
        "chunk_events": 40,
        **overrides,
    }
    return ReconcileOptions(**values)  # type: ignore[arg-type]


async def _some_order(pool: asyncpg.Pool, *, min_events: int = 3) -> tuple[str, int]:
    row = await pool.fetchrow(
        "SELECT substr(stream_id, 7) AS id, max(version) AS v FROM events GROUP BY stream_id"
        " HAVING max(version) >= $1 ORDER BY stream_id LIMIT 1",
        min_events,
    )
    assert row is not None
    return row["id"], row["v"]


async def test_a_clean_pipeline_reconciles_with_zero_mismatches_and_counts_every_event(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    events = await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    seen: list[Mismatch] = []
    metrics = Metrics()
    report = await run_reconciliation(
        pool, _options(kafka_bootstrap, unique_topic), on_mismatch=seen.append, metrics=metrics
    )
    assert seen == []
    assert report.ok, report.as_json()
    assert report.counts["log"] == {"events": events, "orders": ORDERS}
    assert report.counts[KAFKA + unique_topic]["events"] == events
    assert report.counts[KAFKA + unique_topic]["pending"] == 0
    assert report.counts["projection:order_state"]["orders"] == ORDERS
    assert report.counts["projection:transactions"]["orders"] == ORDERS
    assert report.counts["destination:omneo"]["delivered"] == ORDERS
    assert report.counts["destination:omnisend"]["delivered"] == ORDERS
    latest = await latest_report(pool)
    assert latest is not None
    assert latest.id == report.id
    assert latest.ok
    assert (
        metrics.registry.get_sample_value("ledger_reconcile_mismatches", {"place": "projection:order_state"})
        == 0
    )
    assert (metrics.registry.get_sample_value("ledger_reconcile_last_run_timestamp_seconds") or 0) > 0


async def test_a_read_model_row_rolled_back_or_missing_an_event_is_a_mismatch_of_that_order(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    rolled, version = await _some_order(pool)
    live = order_state.PROJECTION.version
    # The row of one order goes back a version; a line of another loses its shipment's effect.
    await pool.execute(f"UPDATE order_state_v{live} SET version = version - 1 WHERE id = $1::uuid", rolled)
    edited = await pool.fetchval(
        f"SELECT order_id::text FROM order_lines_v{live} WHERE shipped_quantity > 0 AND order_id <> $1::uuid"
        " ORDER BY order_id LIMIT 1",
        rolled,
    )
    await pool.execute(
        f"UPDATE order_lines_v{live} SET shipped_quantity = shipped_quantity - 1 WHERE order_id = $1::uuid",
        edited,
    )
    report = await run_reconciliation(pool, _options(kafka_bootstrap, unique_topic))
    found = {(m.kind, m.place, m.order_id) for m in report.mismatches}
    assert found == {
        (READ_MODEL_DIFFERS, "projection:order_state", rolled),
        (READ_MODEL_DIFFERS, "projection:order_state", edited),
    }, report.as_json()
    detail = next(m.detail for m in report.mismatches if m.order_id == rolled)
    assert f"gives version {version}; its row is at version {version - 1}" in detail
    assert not report.ok


async def test_a_transaction_row_deleted_is_a_mismatch_of_the_transactions_read_model(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    table = f"transactions_v{transactions.PROJECTION.version}"
    order_id = await pool.fetchval(f"SELECT order_id::text FROM {table} ORDER BY order_id LIMIT 1")
    assert order_id is not None, "the histories have shipped and paid orders"
    await pool.execute(
        f"DELETE FROM {table} WHERE ctid = (SELECT ctid FROM {table} WHERE order_id = $1::uuid LIMIT 1)",
        order_id,
    )
    report = await run_reconciliation(pool, _options(kafka_bootstrap, unique_topic))
    assert [(m.kind, m.place, m.order_id) for m in report.mismatches] == [
        (READ_MODEL_DIFFERS, "projection:transactions", order_id)
    ], report.as_json()


async def test_a_message_missing_from_a_topic_and_one_out_of_order_are_mismatches_of_their_orders(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    records = await read_to_end(kafka_bootstrap, unique_topic)
    gap, gap_version = await _some_order(pool)
    swapped = await pool.fetchval(
        "SELECT substr(stream_id, 7) FROM events GROUP BY stream_id HAVING max(version) >= 3"
        " AND substr(stream_id, 7) <> $1 ORDER BY stream_id DESC LIMIT 1",
        gap,
    )
    # A copy of the relay's topic with a gap: the gap order's version 2 left out, and the
    # swapped order's versions 1 and 2 in the wrong order.
    copied: list[tuple[bytes | None, bytes]] = []
    held: tuple[bytes | None, bytes] | None = None
    for r in records:
        assert r.key is not None
        assert r.value is not None
        key, version = r.key.decode(), orjson.loads(r.value)["version"]
        if key == gap and version == 2:
            continue
        if key == swapped and version == 1:
            held = (r.key, r.value)
            continue
        copied.append((r.key, r.value))
        if key == swapped and version == 2:
            assert held is not None
            copied.append(held)
    test_topic = unique_topic + ".gap"
    await create_topic(kafka_bootstrap, test_topic, partitions=3)
    await produce(kafka_bootstrap, test_topic, copied)
    report = await run_reconciliation(
        pool, _options(kafka_bootstrap, test_topic, relay_checkpoint=checkpoint_name(unique_topic))
    )
    found = sorted((m.kind, m.order_id, m.detail) for m in report.mismatches)
    assert found == sorted(
        [
            (MISSING, gap, "version 2 not on the topic"),
            (OUT_OF_ORDER, swapped, "version 1 came after a later version"),
        ]
    ), report.as_json()
    assert gap_version >= 3
    assert report.counts[KAFKA + test_topic]["events"] == await pool.fetchval("SELECT count(*) FROM events")


async def test_a_delivery_state_rolled_back_is_a_mismatch_and_a_parked_order_with_a_reason_is_not(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    rolled, version = await _some_order(pool)
    await pool.execute(
        "UPDATE fanout_delivery SET last_version = last_version - 2 WHERE destination = 'omnisend' AND order_id = $1",
        rolled,
    )
    # Another order is behind at omneo too, but parked (with its reason) at the next version.
    parked = await pool.fetchval(
        "SELECT substr(stream_id, 7) FROM events WHERE substr(stream_id, 7) <> $1 GROUP BY stream_id"
        " HAVING max(version) >= 2 ORDER BY stream_id LIMIT 1",
        rolled,
    )
    await pool.execute(
        "UPDATE fanout_delivery SET last_version = last_version - 1 WHERE destination = 'omneo' AND order_id = $1",
        parked,
    )
    await pool.execute(
        "INSERT INTO fanout_parked (destination, event_id, order_id, version, position, envelope, reason)"
        " SELECT 'omneo', event_id::text, $1, version, position, '\\x'::bytea, '422 invalid email'"
        " FROM events WHERE stream_id = 'order-' || $1 ORDER BY version DESC LIMIT 1",
        parked,
    )
    report = await run_reconciliation(pool, _options(kafka_bootstrap, unique_topic))
    assert [(m.kind, m.place, m.order_id, m.detail) for m in report.mismatches] == [
        (
            UNDELIVERED,
            "destination:omnisend",
            rolled,
            f"delivered up to version {version - 2} of {version} published, not parked",
        )
    ], report.as_json()
    assert report.counts["destination:omneo"]["parked"] == 1


async def test_an_interrupted_run_resumes_after_its_last_saved_chunk_and_counts_each_event_once(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    events = await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    rolled, _ = await _some_order(pool)
    await pool.execute(
        "UPDATE fanout_delivery SET last_version = 0 WHERE destination = 'omneo' AND order_id = $1", rolled
    )

    class Interrupted(Exception):
        pass

    def stop_at_first(mismatch: Mismatch) -> None:
        raise Interrupted(mismatch.order_id)

    options = _options(kafka_bootstrap, unique_topic, chunk_events=25)
    with pytest.raises(Interrupted):
        await run_reconciliation(pool, options, on_mismatch=stop_at_first)
    stopped = await latest_report(pool)
    assert stopped is not None
    assert stopped.status == "failed"
    assert stopped.checked_through < stopped.to_position
    resumed = await run_reconciliation(pool, options, resume=True)
    assert resumed.id == stopped.id
    assert resumed.status == "finished"
    assert resumed.counts["log"] == {"events": events, "orders": ORDERS}
    assert [(m.kind, m.order_id) for m in resumed.mismatches] == [(UNDELIVERED, rolled)]
    # Resuming a finished run checks what was appended since: nothing yet.
    again = await run_reconciliation(pool, options, resume=True)
    assert again.id != resumed.id
    assert again.from_position == resumed.to_position + 1
    assert again.counts.get("log", {}).get("events", 0) == 0


def _cli_env(database_url: str, bootstrap: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"LEDGER_DATABASE_URL": database_url, "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    return env


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledger_app.cli", "audit", "reconcile", *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_cli_exits_zero_when_clean_and_prints_every_mismatch_with_exit_one_otherwise(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    env = _cli_env(database_url, kafka_bootstrap)
    code, out = await _cli(env, "--topic", unique_topic)
    assert code == 0, out
    assert "0 mismatch(es)" in out
    rolled, version = await _some_order(pool)
    await pool.execute(
        "UPDATE fanout_delivery SET last_version = 1 WHERE destination = 'omneo' AND order_id = $1", rolled
    )
    code, out = await _cli(env, "--topic", unique_topic, "--chunk", "30")
    assert code == 1, out
    assert (
        f"destination:omneo: undelivered: order {rolled}: delivered up to version 1 of {version} published,"
        " not parked"
    ) in out
    assert "1 mismatch(es)" in out


async def test_the_cli_with_every_runs_again_and_again_and_stops_cleanly_on_sigterm(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    before = await pool.fetchval("SELECT coalesce(max(id), 0) FROM reconcile_runs")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledger_app.cli", "audit", "reconcile", "--topic", unique_topic,
        "--resume", "--every", "0.2",
        cwd=ROOT, env=_cli_env(database_url, kafka_bootstrap),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(120):
            while sum(line.startswith("reconciliation ") for line in lines) < 3:
                line = (await process.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
    out = "".join(lines) + rest.decode()
    assert process.returncode == 0, out
    assert "Traceback" not in out
    assert out.rstrip().endswith("reconciliation stopped"), out
    runs = await pool.fetch("SELECT id, status, from_position FROM reconcile_runs WHERE id > $1 ORDER BY id", before)
    assert len(runs) >= 3, "one run per period"
    assert [r["status"] for r in runs[:3]] == ["finished"] * 3
    assert all(r["status"] in ("finished", "failed") for r in runs), "none left running"
    assert runs[2]["from_position"] > runs[0]["from_position"], "--resume: each run checks what came since"


@contextlib.asynccontextmanager
async def _api(
    pool: asyncpg.Pool, database_url: str, bootstrap: str, topic: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = relay_settings(database_url, bootstrap, topic)
    app = create_app(settings, pool=pool, metrics=Metrics())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger") as client,
    ):
        yield client


async def _finished(api: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """The latest run once it is no longer running (it runs in a task of the API process)."""
    async with asyncio.timeout(60):
        while True:
            body = (await api.get("/api/v3/reconciliations/latest", headers=headers)).json()
            data: dict[str, Any] = body["data"]
            if data["status"] != "running":
                return data
            await asyncio.sleep(0.05)


async def test_the_api_starts_a_run_with_the_admin_scope_and_serves_the_latest_with_audit_read(
    pool: asyncpg.Pool, store: EventStore, database_url: str, kafka_bootstrap: str, unique_topic: str
) -> None:
    await _pipeline(pool, store, database_url, kafka_bootstrap, unique_topic)
    tokens = TokenStore(pool)
    admin = {"Authorization": f"Bearer {(await tokens.create('ops', ['admin']))[0]}"}
    reader = {"Authorization": f"Bearer {(await tokens.create('auditor', ['audit:read']))[0]}"}
    async with _api(pool, database_url, kafka_bootstrap, unique_topic) as api:
        none = await api.get("/api/v3/reconciliations/latest", headers=reader)
        assert none.status_code == 404
        assert none.headers["content-type"] == "application/problem+json"
        refused = await api.post("/api/v3/reconciliations", headers=reader)
        assert refused.status_code == 403
        started = await api.post("/api/v3/reconciliations", headers=admin)
        assert started.status_code == 202, started.text
        run_id = started.json()["data"]["id"]
        body = await _finished(api, reader)
    assert body["id"] == run_id
    assert body["status"] == "finished"
    assert body["ok"] is True
    assert body["mismatches"] == []
    assert body["counts"]["log"]["orders"] == ORDERS

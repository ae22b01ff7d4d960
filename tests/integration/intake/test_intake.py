"""Kafka intake against a real broker: applied once, rejected with a reason, never dropped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger.intake.app import Received
from tests.harness.kafka import consume, produce
from tests.integration.intake.conftest import IntakeRun

pytestmark = pytest.mark.kafka

PLACE: dict[str, Any] = {
    "command": "place_order",
    "idempotency_key": "intake-test-0001",
    "client_id": "checkout",
    "body": {
        "external_id": "K-1",
        "currency": "USD",
        "total": 19.95,
        "items": [{"line_id": "A", "name": "Mug", "quantity": 1, "price_sell": 19.95}],
    },
}


async def wait_for(run: IntakeRun, count: int, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(run.outcomes) < count:
        assert loop.time() < deadline, f"only {len(run.outcomes)} of {count} outcomes"
        await asyncio.sleep(0.02)


async def send(run: IntakeRun, *values: bytes, key: bytes | None = b"k") -> None:
    await produce(run.settings.bootstrap_servers, run.settings.kafka.intake_topic, [(key, v) for v in values])


async def test_a_command_redelivered_is_applied_once(intake_run: IntakeRun) -> None:
    message = json.dumps(PLACE).encode()
    await send(intake_run, message, message)
    await wait_for(intake_run, 2)
    assert [o for _, o in intake_run.outcomes] == ["applied", "replayed"]
    assert await intake_run.event_count() == 1
    metadata = await intake_run.store.pool.fetchval("SELECT metadata FROM events")
    assert (metadata["actor"], metadata["source"], metadata["idempotency_key"]) == (
        "kafka:checkout",
        "kafka",
        "intake-test-0001",
    )
    order_id = await intake_run.store.pool.fetchval("SELECT data->>'order_id' FROM events")
    update = {
        "command": "record_payment",
        "order_id": order_id,
        "expected_version": 1,
        "idempotency_key": "intake-test-0002",
        "client_id": "checkout",
        "body": {"kind": "captured", "amount": 19.95},
    }
    await send(intake_run, json.dumps(update).encode())
    await wait_for(intake_run, 3)
    assert intake_run.outcomes[-1][1] == "applied"
    assert await intake_run.event_count() == 2


BAD: list[tuple[str, bytes, str]] = [
    ("not JSON", b"{nope", "malformed-json"),
    ("NaN", b'{"command": "place_order", "body": {"total": NaN}}', "validation-error"),
    ("unknown command", json.dumps({"command": "steal", "body": {}}).encode(), "validation-error"),
    (
        "schema error",
        json.dumps({**PLACE, "idempotency_key": "bad-1-key", "body": {"items": []}}).encode(),
        "validation-error",
    ),
    ("missing order id", json.dumps({"command": "cancel_order", "body": {}}).encode(), "validation-error"),
    (
        "unknown order",
        json.dumps(
            {"command": "cancel_order", "order_id": "00000000-0000-0000-0000-000000000001", "body": {}}
        ).encode(),
        "not-found",
    ),
    (
        "domain rule",
        json.dumps(
            {
                **PLACE,
                "idempotency_key": "bad-2-key",
                "body": {**PLACE["body"], "external_id": "K-2", "total": 1},
            }
        ).encode(),
        "domain-rule",
    ),
]


async def test_invalid_commands_land_on_the_rejected_topic_with_the_reason(intake_run: IntakeRun) -> None:
    await send(intake_run, *(value for _, value, _ in BAD))
    await wait_for(intake_run, len(BAD))
    assert [o for _, o in intake_run.outcomes] == ["rejected"] * len(BAD)
    records = await consume(
        intake_run.settings.bootstrap_servers, intake_run.settings.kafka.rejected_topic, count=len(BAD)
    )
    assert len(records) == len(BAD), "none dropped"
    for record, (name, value, slug) in zip(records, BAD, strict=True):
        rejected: dict[str, Any] = json.loads(record.value)
        assert rejected["problem"]["type"] == f"urn:order-ledger:problem:{slug}", name
        assert rejected["original"]["value"] == value.decode()
        assert record.key == b"k"
    assert await intake_run.event_count() == 0


async def test_a_conflict_is_rejected_and_later_commands_still_flow(intake_run: IntakeRun) -> None:
    await send(intake_run, json.dumps(PLACE).encode())
    await wait_for(intake_run, 1)
    order_id = await intake_run.store.pool.fetchval("SELECT data->>'order_id' FROM events")
    stale = {
        "command": "update_order",
        "order_id": order_id,
        "expected_version": 0,
        "idempotency_key": "stale-update-1",
        "body": {"status": "processing"},
    }
    dup = {**PLACE, "idempotency_key": "another-key-1"}
    fine = {
        "command": "update_order",
        "order_id": order_id,
        "idempotency_key": "fresh-update-1",
        "body": {"status": "processing"},
    }
    await send(intake_run, json.dumps(stale).encode(), json.dumps(dup).encode(), json.dumps(fine).encode())
    await wait_for(intake_run, 4)
    assert [o for _, o in intake_run.outcomes] == ["applied", "rejected", "rejected", "applied"]
    records = await consume(
        intake_run.settings.bootstrap_servers, intake_run.settings.kafka.rejected_topic, count=2
    )
    assert len(records) == 2
    problems = [json.loads(r.value)["problem"] for r in records]
    assert problems[0]["type"].endswith("version-conflict")
    assert problems[0]["current_version"] == 1
    assert problems[1]["type"].endswith("duplicate-external-id")
    assert problems[1]["existing_order_id"] == order_id


async def test_offsets_are_committed_only_after_the_outcome_and_not_when_the_database_fails(
    intake_run: IntakeRun,
) -> None:
    settings = intake_run.settings
    service = intake_run.intake.service
    assert service is not None
    real_handle = service.handle
    calls = 0
    committed_seen: list[int | None] = []
    probe = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.kafka.intake_group,
        enable_auto_commit=False,
    )
    await probe.start()
    tp = TopicPartition(settings.kafka.intake_topic, 0)

    async def flaky_handle(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        committed_seen.append(await probe.committed(tp))
        if calls == 1:
            raise ConnectionRefusedError("database down")
        return await real_handle(*args, **kwargs)

    service.handle = flaky_handle  # type: ignore[method-assign]
    try:
        await send(intake_run, json.dumps(PLACE).encode())
        await wait_for(intake_run, 1)
        assert calls == 2, "the failed attempt was retried, not skipped"
        assert committed_seen == [None, None], "nothing committed before the outcome"
        assert intake_run.outcomes[0][1] == "applied"
        for _ in range(100):
            if await probe.committed(tp) == 1:
                break
            await asyncio.sleep(0.02)
        assert await probe.committed(tp) == 1
        assert await intake_run.event_count() == 1
    finally:
        await probe.stop()


def test_the_committed_asyncapi_document_is_up_to_date() -> None:
    from pathlib import Path

    from ledger.intake import asyncapi_document

    committed = json.loads(Path("docs/asyncapi.json").read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(asyncapi_document())), (
        "regenerate: python -m ledger.intake.cli asyncapi (or `ledger asyncapi`)"
    )
    channels = set(committed["channels"])
    assert {"orders.intake", "orders.intake.rejected", "orders.events"} <= channels


_ = Received

"""Records that can never be applied are rejected, not retried: the partition must move on."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from ledger.intake.app import UNEXPECTED_ATTEMPTS
from tests.harness.kafka import consume
from tests.integration.intake.conftest import IntakeRun
from tests.integration.intake.test_intake import PLACE, wait_for

pytestmark = pytest.mark.kafka


async def send_with_headers(run: IntakeRun, *messages: tuple[bytes, list[tuple[str, bytes]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=run.settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value, headers in messages:
            await producer.send_and_wait(run.settings.kafka.intake_topic, value, key=b"k", headers=headers)
    finally:
        await producer.stop()


def place(external_id: str, **fields: Any) -> bytes:
    body = {**PLACE["body"], "external_id": external_id}
    envelope = {key: value for key, value in PLACE.items() if key != "idempotency_key"}
    return json.dumps({**envelope, "body": body, **fields}).encode()


async def test_an_idempotency_key_header_with_nul_is_rejected_and_the_partition_moves_on(
    intake_run: IntakeRun,
) -> None:
    await send_with_headers(
        intake_run,
        (place("NUL-1"), [("idempotency-key", b"abc\x00defgh")]),
        (place("NUL-2"), [("idempotency-key", b"fine-key-0001")]),
    )
    await wait_for(intake_run, 2)
    assert [o for _, o in intake_run.outcomes] == ["rejected", "applied"]
    records = await consume(
        intake_run.settings.bootstrap_servers, intake_run.settings.kafka.rejected_topic, count=1
    )
    assert len(records) == 1
    problem = json.loads(records[0].value)["problem"]
    assert problem["type"] == "urn:order-ledger:problem:validation-error"
    assert problem["errors"][0]["loc"] == ["headers", "idempotency-key"]
    assert await intake_run.event_count() == 1


def fail_first(run: IntakeRun, times: int, error: Exception) -> list[int]:
    """Make the service raise `error` on its first `times` calls; returns the call counter."""
    service = run.intake.service
    assert service is not None
    real_handle = service.handle
    calls = [0]

    async def handle(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= times:
            raise error
        return await real_handle(*args, **kwargs)

    service.handle = handle  # type: ignore[method-assign]
    return calls


async def test_a_database_data_error_is_rejected_not_retried(intake_run: IntakeRun) -> None:
    calls = fail_first(
        intake_run, 1, asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00")
    )
    await send_with_headers(intake_run, (place("DATA-1"), []), (place("DATA-2"), []))
    await wait_for(intake_run, 2)
    assert [o for _, o in intake_run.outcomes] == ["rejected", "applied"]
    assert calls == [2], "the data error was not retried"
    records = await consume(
        intake_run.settings.bootstrap_servers, intake_run.settings.kafka.rejected_topic, count=1
    )
    assert len(records) == 1
    assert json.loads(records[0].value)["problem"]["type"] == "urn:order-ledger:problem:validation-error"


async def test_a_record_that_keeps_failing_unexpectedly_is_rejected_after_a_few_tries_not_skipped(
    intake_run: IntakeRun,
) -> None:
    """A bug (here: a ValueError out of the service) must neither lose the record (an unhandled
    error is not acked, and the next ack would commit past it) nor block the partition."""
    calls = fail_first(intake_run, UNEXPECTED_ATTEMPTS, ValueError("a bug in the ledger"))
    await send_with_headers(intake_run, (place("BUG-1"), []), (place("BUG-2"), []))
    await wait_for(intake_run, 2)
    assert [o for _, o in intake_run.outcomes] == ["rejected", "applied"]
    assert calls == [UNEXPECTED_ATTEMPTS + 1]
    records = await consume(
        intake_run.settings.bootstrap_servers, intake_run.settings.kafka.rejected_topic, count=1
    )
    assert len(records) == 1
    rejected = json.loads(records[0].value)
    assert rejected["problem"]["type"] == "urn:order-ledger:problem:internal-error"
    assert "ValueError" in rejected["problem"]["detail"]
    assert await intake_run.event_count() == 1


async def test_a_producer_time_out_of_range_or_a_number_goes_to_the_rejected_topic(
    intake_run: IntakeRun,
) -> None:
    end_of_time = {**PLACE["body"], "external_id": "T-1", "placed_at": "9999-12-31T23:59:59-14:00"}
    unix_time = {**PLACE["body"], "external_id": "T-2", "placed_at": 0}
    envelope = {key: value for key, value in PLACE.items() if key not in ("idempotency_key", "body")}
    await send_with_headers(
        intake_run,
        (json.dumps({**envelope, "body": end_of_time}).encode(), []),
        (json.dumps({**envelope, "body": unix_time}).encode(), []),
        (
            place(
                "T-3", body={**PLACE["body"], "external_id": "T-3", "placed_at": "2026-01-31T10:00:00+10:00"}
            ),
            [],
        ),
    )
    await wait_for(intake_run, 3)
    assert [o for _, o in intake_run.outcomes] == ["rejected", "rejected", "applied"]
    records = await consume(
        intake_run.settings.bootstrap_servers, intake_run.settings.kafka.rejected_topic, count=2
    )
    for record in records:
        problem = json.loads(record.value)["problem"]
        assert problem["type"] == "urn:order-ledger:problem:validation-error"
        assert problem["errors"][0]["loc"][-1] == "placed_at"
    assert await intake_run.event_count() == 1

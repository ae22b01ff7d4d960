"""An intake process per test on a fresh database and unique topics of the session's broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio

from ledger.intake import Intake
from ledger.intake.app import Received
from ledger.service import OrderService
from ledger.store import EventStore
from ledger_kernel.settings import KafkaSettings, Settings
from tests.harness.kafka import create_topic


@dataclass
class IntakeRun:
    intake: Intake
    settings: Settings
    store: EventStore
    outcomes: list[tuple[Received, str]] = field(default_factory=list)

    async def event_count(self) -> int:
        count: int = await self.store.pool.fetchval("SELECT count(*) FROM events")
        return count


@pytest_asyncio.fixture(loop_scope="session")
async def intake_run(kafka_bootstrap: str, store: EventStore, database_url: str) -> AsyncIterator[IntakeRun]:
    suffix = uuid.uuid4().hex[:10]
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        intake_topic=f"intake-{suffix}",
        rejected_topic=f"rejected-{suffix}",
        events_topic=f"events-{suffix}",
        intake_group=f"intake-{suffix}",
    )
    settings = Settings(database_url=database_url, kafka=kafka)
    for topic in (kafka.intake_topic, kafka.rejected_topic):
        await create_topic(kafka_bootstrap, topic, partitions=1)
    intake = Intake(settings, service=OrderService(store), backoff_s=lambda attempt: 0.05)
    run = IntakeRun(intake, settings, store)

    async def record(received: Received, outcome: str) -> None:
        run.outcomes.append((received, outcome))

    intake.on_outcome = record
    await intake.start()
    try:
        yield run
    finally:
        await intake.stop()

"""The PostgreSQL store keeps the event-store contract (the in-memory store runs the same suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from ledger.store import EventStore
from tests.contract.eventstore import EventStoreContract, contract_registry

pytestmark = pytest.mark.postgres


class TestPostgresEventStore(EventStoreContract):
    @pytest_asyncio.fixture(loop_scope="session")
    async def contract_store(self, pool: asyncpg.Pool) -> AsyncIterator[EventStore]:
        store = EventStore(pool, contract_registry())
        try:
            yield store
        finally:
            await store.aclose()

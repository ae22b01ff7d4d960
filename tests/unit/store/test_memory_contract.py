"""The in-memory store keeps the event-store contract (PostgreSQL runs the same suite)."""

from __future__ import annotations

import pytest

from ledger.store import InMemoryEventStore
from tests.contract.eventstore import EventStoreContract, contract_registry


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def contract_store(self) -> InMemoryEventStore:
        return InMemoryEventStore(contract_registry())

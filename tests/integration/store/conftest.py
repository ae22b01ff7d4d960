"""Store tests use their own small event vocabulary (sample_events) instead of the domain's."""

from __future__ import annotations

import pytest

from ledger.store import EventRegistry
from tests.integration.store.sample_events import make_registry


@pytest.fixture
def event_registry() -> EventRegistry:
    return make_registry()

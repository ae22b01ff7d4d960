"""`ledger.repository.fold_prefixes`: what both fold caches (the relay's, the projections') load on a miss."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest

from ledger.domain import PaymentCaptured
from ledger.repository import ConnectionReader, fold_prefixes, load
from ledger.store import NO_STREAM, EventStore
from ledger_kernel.wire.streams import order_id_of
from projections.simulate import HistoryGenerator, new_event

pytestmark = pytest.mark.postgres


async def test_fold_prefixes_folds_each_order_up_to_its_version_in_one_query_and_isolates_a_broken_one(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    histories = [h for h in HistoryGenerator(seed=7).histories(8, max_events=10) if len(h[1]) >= 3]
    for stream, events in histories:
        await store.append(stream, [new_event(e) for e in events], NO_STREAM)
    broken = "order-00000000-0000-4000-8000-000000000001"  # starts with a capture: cannot fold
    await store.append(broken, [new_event(PaymentCaptured(amount=5))], NO_STREAM)
    upto = {stream: len(events) - 1 for stream, events in histories}

    states, failed = await fold_prefixes(
        pool, {**upto, broken: 1, "order-00000000-0000-4000-8000-000000000002": 3}
    )

    reader = ConnectionReader(pool)
    for stream, version in upto.items():
        order_id = order_id_of(stream)
        assert order_id is not None
        assert states[stream] == await load(reader, UUID(order_id), to_version=version)
    assert set(failed) == {broken}
    assert failed[broken].version == 1
    assert set(states) == set(upto)  # the broken order and the one without events are not states

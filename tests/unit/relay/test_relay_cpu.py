"""The relay's CPU savings keep its output and its memory behaviour: caches, GC freezing, no cycles."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic_core import TzInfo

from ledger.domain import event_data
from ledger.relay.foldcache import DomainAdapter
from ledger.relay.message import LogEvent, build_message
from ledger.relay.orderview import _iso
from ledger.relay.relay import BatchGc, Relay
from ledger_kernel.observability import Metrics
from ledger_kernel.settings import Settings
from tests.unit.domain.helpers import every_event_type

OFFSETS = st.integers(-86_399, 86_399) | st.integers(-1_439, 1_439).map(lambda minutes: minutes * 60)


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    OFFSETS,
    st.sampled_from(["pydantic", "stdlib", "naive"]),
)
def test_iso_writes_what_isoformat_writes(value: datetime, offset: int, kind: str) -> None:
    """orjson writes offsets of whole minutes as `isoformat` does; `_iso` keeps it to those."""
    tzinfo = {"pydantic": TzInfo(offset), "stdlib": timezone(timedelta(seconds=offset)), "naive": None}[kind]
    moment = value.replace(tzinfo=tzinfo)
    assert orjson.dumps(_iso(moment)) == orjson.dumps(moment.isoformat())


def _logged(type_: str, schema_version: int, data: str, metadata: str = '{"actor": "t"}') -> LogEvent:
    order_id = uuid.uuid4()
    return LogEvent(
        1, 100, f"order-{order_id}", 2, uuid.uuid4(), type_, schema_version, data, metadata,
        datetime(2026, 3, 1, tzinfo=UTC),
    )  # fmt: skip


def test_cached_data_is_never_shared_between_upcastings() -> None:
    """The same stored text gives the same data only with the same upcasting: an old version
    published as stored, then upcast, then as stored again."""
    v1 = '{"lines": [], "tracking": "https://t.example/1", "shipment_id": "S1", "dispatched_at": "2026-01-02T03:04:05Z"}'
    event = _logged("ShipmentDispatched", 1, v1)
    domain = DomainAdapter()
    as_stored = [build_message(event, None).value for _ in range(2)]
    upcast = [build_message(event, None, upcast=domain.upcast).value for _ in range(2)]
    again = build_message(event, None).value
    assert as_stored[0] == as_stored[1] == again
    assert upcast[0] == upcast[1]
    assert orjson.loads(as_stored[0])["schema_version"] == 1
    published = orjson.loads(upcast[0])
    assert published["schema_version"] == 2
    assert published["data"]["tracking_url"] == "https://t.example/1"


def test_repeated_texts_give_the_bytes_of_a_fresh_decoding() -> None:
    """Cache hits (short data, shared metadata) give the bytes of the first, decoded, message."""
    domain = DomainAdapter()
    for event, _, _ in every_event_type().log:
        text = orjson.dumps(event_data(event)).decode()
        logged = _logged(event.type, type(event).schema_version, text, '{"z": 1, "actor": "t"}')
        first = build_message(logged, None, upcast=domain.upcast)
        assert build_message(logged, None, upcast=domain.upcast) == first
        assert orjson.loads(first.value)["data"] == orjson.loads(text)


@pytest.fixture
def batch_gc() -> Iterator[BatchGc]:
    """A `BatchGc` turned on as `tune_gc` does, the process's GC state restored afterwards."""
    enabled = BatchGc.enabled
    BatchGc.enabled = True
    try:
        yield BatchGc()
    finally:
        BatchGc.enabled = enabled
        gc.unfreeze()


def test_a_published_batch_leaves_its_survivors_frozen_until_the_relay_stops(batch_gc: BatchGc) -> None:
    survivors = [[index] for index in range(10)]
    batch_gc.after_batch(10)
    assert all(gc.is_tracked(survivor) for survivor in survivors)
    assert gc.get_freeze_count() >= len(survivors)
    batch_gc.release()
    assert gc.get_freeze_count() == 0


def test_a_full_collection_bounds_what_freezing_could_keep(batch_gc: BatchGc) -> None:
    """Every `full_every` events the frozen objects are unfrozen and collected: a reference cycle
    made on a rare path (an error's traceback) is not kept for good."""
    batch_gc.full_every = 100
    cycle: list[object] = []
    cycle.append(cycle)
    ref = weakref.ref(leaked := _Cyclic())
    leaked.me = leaked
    batch_gc.after_batch(10)  # frozen while alive
    del leaked, cycle
    assert ref() is not None  # a frozen cycle: the collector does not see it
    batch_gc.after_batch(90)  # the hundredth event: unfreeze, collect, freeze again
    assert ref() is None


class _Cyclic:
    me: object = None


def test_off_unless_the_process_opted_in() -> None:
    assert not BatchGc.enabled  # only `tune_gc` (relay processes, the benchmark) turns it on
    frozen = gc.get_freeze_count()
    BatchGc().after_batch(1_000)
    assert gc.get_freeze_count() == frozen


def test_a_relay_is_freed_without_the_collector() -> None:
    """No reference cycle through the relay: once dropped, it and its order cache are freed by
    reference counting, also when frozen (see `BatchGc`)."""

    class Pool:
        def get_max_size(self) -> int:
            return 4

    settings = Settings(database_url="postgresql://unused", kafka_bootstrap_servers="unused:9092")
    gc.disable()
    try:
        relay = Relay(settings, Pool(), stop=asyncio.Event(), metrics=Metrics())  # type: ignore[arg-type]
        ref = weakref.ref(relay)
        del relay
        assert ref() is None
    finally:
        gc.enable()

"""The relay's memoized order JSON gives exactly the bytes of the plain view, state after state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import (
    EVENT_TYPES,
    DomainError,
    Order,
    PlaceOrder,
    UpdateOrder,
    decode_event,
    event_data,
    evolve,
    order_to_json,
)
from ledger.domain.views import JSON_MONEY
from ledger.relay.foldcache import DomainAdapter, OrderStates
from ledger.relay.message import LogEvent, build_message
from ledger.relay.orderview import KEYS, OrderJSON
from ledger.relay.publisher import murmur2, partition_of
from ledger.store.records import RecordedEvent
from ledger_kernel.wire.codec import dumps_canonical
from projections.simulate import HistoryGenerator
from tests.property.domain.test_order_properties import commands, place_orders
from tests.unit.domain.helpers import Stream, body, every_event_type

ADDRESS = {"first_name": "Ann", "city": "Sydney", "country_code": "AUS", "postal_code": "2000"}


def plain(order: Order) -> bytes:
    return dumps_canonical(order_to_json(order, money=JSON_MONEY))


def states_of(stream: Stream) -> list[Order]:
    """Every state of the stream's log, as the relay folds it (one `evolve` per event)."""
    out: list[Order] = []
    state: Order | None = None
    for event, version, at in stream.log:
        state = evolve(state, event, version=version, recorded_at=at)
        out.append(state)
    return out


def assert_same_bytes(states: list[Order]) -> None:
    memo = OrderJSON()
    for state in states:
        assert memo.dumps(state) == plain(state), f"version {state.version}"


def test_keys_are_the_views_keys_in_sorted_order() -> None:
    order = every_event_type().order
    assert list(KEYS) == sorted(order_to_json(order))
    assert list(orjson.loads(OrderJSON().dumps(order))) == list(KEYS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_simulated_histories_give_the_plain_views_bytes_after_every_event(seed: int) -> None:
    generator = HistoryGenerator(seed=seed)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    for _, events in generator.histories(150, max_events=20):
        states: list[Order] = []
        state: Order | None = None
        for version, event in enumerate(events, start=1):
            at += timedelta(seconds=1, microseconds=version * 7)
            state = evolve(state, event, version=version, recorded_at=at)
            states.append(state)
        assert_same_bytes(states)


def test_every_event_type_with_addresses_tags_and_details_changes() -> None:
    s = every_event_type()
    states = states_of(s)
    t = Stream()
    t.send(
        body(
            PlaceOrder,
            {
                "items": [{"name": "Mug", "sku": "M", "quantity": 2, "price_sell": "12.50"}],
                "billing_address": ADDRESS,
                "shipping_address": {**ADDRESS, "address2": "Unit 4"},
                "tags": ["vip", "gift"],
                "email": "a@example.com",
            },
        )
    )
    t.send(body(UpdateOrder, {"shipping_address": {**ADDRESS, "city": "Perth"}, "tags": ["b", "a"]}))
    t.send(body(UpdateOrder, {"items": [{"name": "Cup", "sku": "C", "quantity": 1, "price_sell": "3.10"}]}))
    t.send(body(UpdateOrder, {"discount_code": "SAVE", "note": "left at door"}))
    assert_same_bytes(states)
    assert_same_bytes(states_of(t))


def test_non_utc_datetimes_are_written_as_the_view_writes_them() -> None:
    states = states_of(every_event_type())
    plus10 = timezone(timedelta(hours=10))
    odd = timezone(timedelta(hours=-3, minutes=-30))
    shifted = [
        s._replace(
            updated_at=s.updated_at.astimezone(plus10 if s.version % 2 else odd),
            canceled_at=None if s.canceled_at is None else s.canceled_at.astimezone(plus10),
            deleted_at=None if s.deleted_at is None else s.deleted_at.replace(microsecond=0),
        )
        for s in states
    ]
    assert_same_bytes(shifted)


def test_a_memo_given_another_orders_state_starts_over() -> None:
    a = every_event_type().order
    b = states_of(every_event_type())[3]._replace(id=uuid.uuid4(), external_id="other")
    memo = OrderJSON()
    for order in (a, b, a):
        assert memo.dumps(order) == plain(order)


@settings(max_examples=60)
@given(data=st.data())
def test_random_command_sequences_give_the_plain_views_bytes(data: st.DataObject) -> None:
    s = Stream()
    s.send(data.draw(place_orders()))
    for _ in range(data.draw(st.integers(0, 20))):
        try:
            s.send(data.draw(commands(s.order)))
        except DomainError:
            continue
    assert_same_bytes(states_of(s))


@given(st.datetimes(timezones=st.just(UTC)))
def test_orjson_writes_utc_datetimes_as_isoformat(value: datetime) -> None:
    assert orjson.dumps(value) == orjson.dumps(value.isoformat())


@given(st.binary(max_size=80), st.integers(1, 64))
def test_murmur2_and_partition_match_aiokafkas(key: bytes, partitions: int) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)
    ids = list(range(partitions))
    assert partition_of(key, partitions) == DefaultPartitioner()(key, ids, ids)


def test_an_envelope_from_order_bytes_equals_one_from_the_order_view() -> None:
    order = every_event_type().order
    event = RecordedEvent(
        position=7,
        tx=100,
        stream_id=f"order-{order.id}",
        version=order.version,
        event_id=uuid.uuid4(),
        type="OrderDeleted",
        schema_version=1,
        data={"reason": None},
        metadata={"z": 1, "actor": "t"},
        recorded_at=order.updated_at,
        prev_hash=None,
        hash=b"h",
    )
    from_view = build_message(event, order_to_json(order, money=JSON_MONEY))
    from_bytes = build_message(event, OrderJSON().dumps(order))
    assert from_bytes == from_view
    assert orjson.loads(from_bytes.value)["order"] == orjson.loads(plain(order))


def _stored_text(data: dict[str, object]) -> str:
    """`data` as PostgreSQL writes jsonb as text: `", "` and `": "` separators, keys by length."""
    import json

    def ordered(value: object) -> object:
        if isinstance(value, dict):
            return {k: ordered(value[k]) for k in sorted(value, key=lambda k: (len(k.encode()), k.encode()))}
        if isinstance(value, list):
            return [ordered(v) for v in value]
        return value

    return json.dumps(ordered(data), ensure_ascii=False)


def _log_of(stream: Stream) -> list[tuple[RecordedEvent, LogEvent]]:
    """Each event of `stream` as the store reads it (decoded) and as the relay reads it (text)."""
    order_id = stream.order.id
    out = []
    for position, (event, version, at) in enumerate(stream.log, start=1):
        data = orjson.loads(orjson.dumps(event_data(event)))
        metadata = {"actor": "t", "request_id": f"r{version}", "z": [1, {"b": 2, "a": "é"}]}
        recorded = RecordedEvent(
            position, 100 + position, f"order-{order_id}", version, uuid.uuid4(), event.type,
            type(event).schema_version, data, metadata, at, None, b"h",
        )  # fmt: skip
        text = LogEvent(*recorded[:7], _stored_text(data), _stored_text(metadata), at)  # type: ignore[arg-type]
        out.append((recorded, text))
    return out


def test_every_event_type_decodes_the_same_from_json_text_as_from_the_decoded_dict() -> None:
    """The relay folds from JSON text (pydantic's JSON validator), the store's reads give dicts."""
    seen: set[str] = set()
    for recorded, text in _log_of(every_event_type()):
        from_dict = decode_event(recorded.type, recorded.data, schema_version=recorded.schema_version)
        from_text = decode_event(text.type, text.data, schema_version=text.schema_version)
        assert from_text == from_dict
        seen.add(recorded.type)
    assert seen == set(EVENT_TYPES)


def test_an_envelope_from_json_text_is_byte_identical_to_one_from_the_decoded_dict() -> None:
    """At-least-once: a re-published event must give the same bytes whichever way it was read."""
    domain = DomainAdapter()
    for recorded, text in _log_of(every_event_type()):
        view = b'{"v":1}'
        from_dict = build_message(recorded, view, upcast=domain.upcast)
        from_text = build_message(text, view, upcast=domain.upcast)
        assert from_text == from_dict
        assert from_text.checkpoint == recorded.checkpoint


def test_the_relays_states_give_the_same_views_from_json_text_and_from_dicts() -> None:
    log = _log_of(every_event_type())
    from_dicts = OrderStates(None, DomainAdapter())  # type: ignore[arg-type]  # no misses: no pool
    from_text = OrderStates(None, DomainAdapter())  # type: ignore[arg-type]
    views = [(from_dicts.advance(recorded), from_text.advance(text)) for recorded, text in log]
    assert all(a == b and a is not None for a, b in views)

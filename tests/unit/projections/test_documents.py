"""The read models' documents are byte for byte the domain's default JSON view, serialized.

Projections build views with orjson-ready money and timestamps (`MONEY`, `NATIVE_DATETIMES`)
to skip per-value conversions; these tests pin that the text stored is what the plain view
(`order_to_json` with Decimals and ISO strings) serializes to.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from ledger.domain import Address, Order, OrderEvent, evolve, order_to_json, transaction_to_json
from ledger.domain.transactions import derive_transactions
from ledger_kernel.wire.codec import dumps, dumps_str_keys
from projections import order_state, transactions
from projections.simulate import HistoryGenerator

# Offsets as producers send them (whole minutes: what ISO 8601 and pydantic's parser accept).
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_PARSED = TypeAdapter(datetime)


@given(st.datetimes(timezones=st.one_of(st.just(UTC), _OFFSETS)))
def test_orjson_writes_an_aware_datetime_as_its_isoformat(value: datetime) -> None:
    assert orjson.dumps(value) == orjson.dumps(value.isoformat())
    parsed = _PARSED.validate_json(orjson.dumps(value.isoformat()))  # pydantic's own tzinfo type
    assert orjson.dumps(parsed) == orjson.dumps(parsed.isoformat())


@settings(max_examples=15)
@given(st.integers(0, 2**32 - 1))
def test_stored_documents_are_the_serialized_default_views(seed: int) -> None:
    for order in _orders(seed, 40):
        doc = order_state.rows(order)[order_state.ORDERS.base][0][-1]
        assert doc == dumps(order_to_json(order)).decode()
        stored = [row[-1] for row in transactions.rows(order)[transactions.TRANSACTIONS.base]]
        assert stored == [dumps(transaction_to_json(tx)).decode() for tx in derive_transactions(order)]


_KEYS = st.one_of(st.text(max_size=4), st.integers(-5, 5))
_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.text(),
        st.decimals(allow_nan=False, allow_infinity=False, places=2),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=20,
)


@given(_VALUES)
def test_documents_writer_gives_the_codecs_bytes_for_any_keys(value: Any) -> None:
    """`dumps_str_keys` (documents) drops orjson's non-string-key option; a non-string key
    falls back, so the bytes are always `dumps`' (Decimals included)."""
    assert dumps_str_keys(value) == dumps(value)
    assert dumps_str_keys({1: Decimal("19.90")}) == dumps({1: Decimal("19.90")}) == b'{"1":19.90}'


def test_address_view_equals_model_dump() -> None:
    address = Address(first_name="Ada", city="Sydney", country_code="AUS", postal_code="2000", address2=None)
    order = _orders(7, 1)[0]
    view = order_to_json(
        order._replace(details=order.details.model_copy(update={"shipping_address": address}))
    )
    assert view["shipping_address"] == address.model_dump()
    assert list(view["shipping_address"]) == list(address.model_dump())


def _fold(events: list[OrderEvent], at: datetime) -> Order:
    order: Order | None = None
    for version, event in enumerate(events, start=1):
        order = evolve(order, event, version=version, recorded_at=at)
    assert order is not None
    return order


def _orders(seed: int, count: int) -> list[Order]:
    generator = HistoryGenerator(seed=seed)
    return [_fold(events, generator.now) for _, events in generator.histories(count)]

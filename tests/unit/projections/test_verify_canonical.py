"""Verification's canonical rows: equal rows compare equal whichever side they come from, any change shows."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson

from ledger.domain import evolve
from projections import order_state, transactions
from projections.canonical import (
    DOCUMENT,
    JSON,
    JSONB,
    VALUE,
    canonical_row,
    column_kinds,
    table_checksum,
)
from projections.definition import Column, Table
from projections.encoding import json_value
from projections.simulate import HistoryGenerator

TABLE = Table(
    base="t",
    columns=(
        Column("id", "uuid NOT NULL"),
        Column("at", "timestamptz NOT NULL"),
        Column("doc", "json NOT NULL"),
        Column("lines", "jsonb"),
    ),
    primary_key=("id",),
    key="id",
)
KINDS = column_kinds(TABLE)
ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
AT = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def test_column_kinds_follow_the_sql_types() -> None:
    assert KINDS == (VALUE, VALUE, JSON, JSONB)
    assert column_kinds(order_state.ORDERS)[-1] == DOCUMENT  # `doc` is a text document: by digest
    assert JSONB in column_kinds(transactions.TRANSACTIONS)


def test_the_built_row_and_the_row_read_back_are_equal() -> None:
    doc = {"b": 1, "a": [1, 2], "total": orjson.Fragment(b"19.90")}
    lines = [{"z": 1, "a": orjson.Fragment(b"19.90")}]
    built = (ID, AT.astimezone(timezone(timedelta(hours=10))), json_value(doc), json_value(lines))
    # As the tables give it back: the json text verbatim, jsonb respaced with keys reordered.
    read = (str(ID), AT, '{"b":1,"a":[1,2],"total":19.90}', '[{"a": 19.90, "z": 1}]')
    assert canonical_row(built, KINDS) == canonical_row(read, KINDS)


def test_json_documents_are_compared_as_written() -> None:
    row = (ID, AT, '{"a":1,"b":2}', None)
    assert canonical_row(row, KINDS) != canonical_row((ID, AT, '{"a":1,"b":3}', None), KINDS)
    # json keeps its text, so even a reordering of keys is a difference from what was written.
    assert canonical_row(row, KINDS) != canonical_row((ID, AT, '{"b":2,"a":1}', None), KINDS)


def test_jsonb_values_time_and_nulls_are_compared_by_value() -> None:
    row = (ID, AT, "{}", '{"a": 1, "bb": 2}')
    assert canonical_row(row, KINDS) == canonical_row((ID, AT, "{}", {"bb": 2, "a": 1}), KINDS)
    assert canonical_row(row, KINDS) != canonical_row((ID, AT, "{}", '{"a": 1, "bb": 3}'), KINDS)
    assert canonical_row(row, KINDS) != canonical_row((ID, AT, "{}", None), KINDS)
    assert canonical_row(row, KINDS) != canonical_row(
        (ID, AT + timedelta(microseconds=1), "{}", row[3]), KINDS
    )


def test_documents_are_compared_by_digest_and_any_change_shows() -> None:
    kinds = (VALUE, DOCUMENT)
    text = '{"id":"1","total":19.90,"name":"Café ✓"}'
    assert canonical_row((ID, text), kinds) == orjson.dumps(
        [str(ID), hashlib.sha256(text.encode()).hexdigest()]
    )
    assert canonical_row((ID, text), kinds) != canonical_row((ID, text.replace("19.90", "19.9")), kinds)
    assert canonical_row((ID, text), kinds) != canonical_row((ID, None), kinds)


def test_each_tables_row_checksum_is_the_checksum_of_its_canonical_rows() -> None:
    """The per-table encoders (specialised for speed) write exactly `canonical_row`'s bytes."""
    generator = HistoryGenerator(seed=3)
    for _, events in generator.histories(60):
        order = None
        for version, event in enumerate(events, start=1):
            order = evolve(
                order, event, version=version, recorded_at=AT.astimezone(timezone(timedelta(hours=10)))
            )
        assert order is not None
        for projection in (order_state.PROJECTION, transactions.PROJECTION):
            for base, rows in projection.rows(order).items():
                table = projection.table(base)
                encoded = sorted(canonical_row(r, column_kinds(table)) for r in rows)
                digest = hashlib.blake2b(b"\n".join(encoded), digest_size=16).digest()
                assert table_checksum(table, rows) == (len(rows), digest)

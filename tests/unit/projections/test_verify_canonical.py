"""Verification's canonical row text: its exact form, jsonb's text, and the specialised encoders.

That the server writes the same text for the same rows is proven against PostgreSQL in
tests/property/projections/test_canonical_sql.py.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest

from ledger.domain import evolve
from projections import order_state, transactions
from projections.canonical import (
    DOCUMENT,
    JSON,
    JSONB,
    column_kind,
    document_digest,
    jsonb_text,
    row_text,
    table_checksum,
)
from projections.definition import Column, Table
from projections.simulate import HistoryGenerator

TABLE = Table(
    base="t",
    columns=(
        Column("id", "uuid NOT NULL"),
        Column("n", "bigint"),
        Column("ok", "boolean NOT NULL"),
        Column("at", "timestamptz NOT NULL"),
        Column("name", "text"),
        Column("doc", "text NOT NULL", document=True),
        Column("raw", "json"),
        Column("tree", "jsonb"),
    ),
    primary_key=("id",),
    key="id",
)
ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
AT = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def test_a_row_is_written_as_a_json_array_of_its_column_forms() -> None:
    doc = '{"total":19.90,"name":"Café ✓"}'
    local = AT.astimezone(timezone(timedelta(hours=10)))
    row = (ID, None, True, local, 'a"b', doc, {"b": 1, "a": orjson.Fragment(b"19.90")}, {"bb": 1, "a": [2]})
    micros = (AT - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert (
        row_text(TABLE, row)
        == (
            f'["{ID}",null,true,{micros},"a\\"b","{document_digest(doc)}",{{"b":1,"a":19.90}},{{"a": [2], "bb": 1}}]'
        ).encode()
    )
    assert document_digest(doc) == hashlib.sha256(doc.encode()).hexdigest()


def test_jsonb_text_orders_keys_by_length_then_bytes_and_keeps_number_literals() -> None:
    value = {"bb": 1, "a": [orjson.Fragment(b"19.90"), None, True], "c": {"é": 'x\n"\x01'}, "aa": False}
    assert (
        jsonb_text(value) == '{"a": [19.90, null, true], "c": {"é": "x\\n\\"\\u0001"}, "aa": false, "bb": 1}'
    )
    assert jsonb_text(orjson.Fragment(b"[1e2, -0, 1.50e1, {}, []]")) == "[100, 0, 15.0, {}, []]"
    assert jsonb_text("text") == '"text"'  # a str is a JSON string, as the codec writes it


def test_column_kinds_follow_the_sql_types_and_unknown_types_are_refused() -> None:
    assert column_kind(order_state.ORDERS.columns[-1]) == DOCUMENT
    assert JSON in [column_kind(c) for c in transactions.TRANSACTIONS.columns]
    table = Table(
        base="bad",
        columns=(Column("id", "uuid NOT NULL"), Column("x", "numeric")),
        primary_key=("id",),
        key="id",
    )
    with pytest.raises(ValueError, match="no canonical text for SQL type 'numeric'"):
        table_checksum(table, [(ID, Decimal(1))])


def test_checksums_ignore_row_order_and_show_any_change() -> None:
    row = (ID, 5, True, AT, "a", "{}", None, None)
    other = (ID, 6, True, AT, "a", "{}", None, None)
    assert table_checksum(TABLE, [row, other]) == table_checksum(TABLE, [other, row])
    assert table_checksum(TABLE, [row])[0] == 1
    variants = [
        other,
        (ID, None, True, AT, "a", "{}", None, None),
        (ID, 5, False, AT, "a", "{}", None, None),
        (ID, 5, True, AT + timedelta(microseconds=1), "a", "{}", None, None),
        (ID, 5, True, AT, "", "{}", None, None),
        (ID, 5, True, AT, None, "{}", None, None),
        (ID, 5, True, AT, "a", "{} ", None, None),
        (ID, 5, True, AT, "a", "{}", "x", None),
        (ID, 5, True, AT, "a", "{}", None, [orjson.Fragment(b"19.9")]),
    ]
    digests = {table_checksum(TABLE, [r])[1] for r in [row, *variants]}
    assert len(digests) == len(variants) + 1


def _plain_row_text(table: Table, row: tuple[Any, ...]) -> bytes:
    """The row text spelled out value by value: the reference for the specialised encoders."""
    out = []
    for column, value in zip(table.columns, row, strict=True):
        kind = column_kind(column)
        if value is None:
            out.append("null")
        elif kind == "boolean":
            out.append("true" if value else "false")
        elif kind == "timestamp":
            out.append(str((value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)))
        elif kind == DOCUMENT:
            out.append(f'"{document_digest(value)}"')
        elif kind == JSONB:
            out.append(jsonb_text(value))
        elif kind in ("uuid", "text"):
            out.append(orjson.dumps(str(value)).decode())
        else:
            out.append(orjson.dumps(value).decode())
    return ("[" + ",".join(out) + "]").encode()


def test_each_tables_specialised_encoder_writes_the_row_text_spelled_out() -> None:
    generator = HistoryGenerator(seed=3)
    seen = 0
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
                for row in rows:
                    assert row_text(table, row) == _plain_row_text(table, row)
                    seen += 1
    assert seen > 100

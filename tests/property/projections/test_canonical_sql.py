"""Verification's two sides agree: the checksum Python writes for rows equals the one the server
computes for the same rows once COPYed, for any value of every supported column type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import tables
from projections.canonical import checksum_sql, jsonb_text, sql_checksum, table_checksum
from projections.db import connection
from projections.definition import Column, Projection, Row, Table

pytestmark = [pytest.mark.postgres, pytest.mark.asyncio(loop_scope="session")]

TABLE = Table(
    base="canon",
    columns=(
        Column("id", "uuid NOT NULL"),
        Column("line", "integer NOT NULL"),
        Column("name", "text"),
        Column("amount", "bigint"),
        Column("flag", "boolean"),
        Column("at", "timestamptz"),
        Column("doc", "text", document=True),
        Column("raw", "json"),
        Column("tree", "jsonb"),
    ),
    primary_key=("id", "line"),
    key="id",
)
PROJECTION = Projection(name="canon", version=1, tables=(TABLE,), rows=lambda order: {})

# Server text holds no NUL, and neither does a jsonb string.
texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
numbers = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 4)
    .flatmap(lambda p: st.decimals(-(10**12), 10**12, allow_nan=False, allow_infinity=False, places=p))
    .map(lambda d: orjson.Fragment(str(d).encode())),
    st.sampled_from(["1e2", "1.50e1", "-0", "-0.0", "2.5E-3", "0.000", "19.90"]).map(
        lambda s: orjson.Fragment(s.encode())
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | texts | numbers,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
stamps = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets)


@st.composite
def rows(draw: st.DrawFn) -> list[Row]:
    ids = draw(st.lists(st.uuids(), min_size=1, max_size=3, unique=True))
    return [
        (
            order_id,
            line,
            draw(st.none() | texts),
            draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
            draw(st.none() | st.booleans()),
            draw(st.none() | stamps),
            draw(st.none() | texts),
            draw(st.none() | json_values),
            draw(st.none() | json_values),
        )
        for order_id in ids
        for line in range(draw(st.integers(1, 3)))
    ]


async def server_checksums(conn: asyncpg.Connection) -> dict[str, tuple[int, bytes]]:
    records = await conn.fetch(checksum_sql(TABLE, TABLE.physical(1)))
    return {order_id: sql_checksum(count, total) for order_id, count, total in records}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=rows())
async def test_python_and_the_server_checksum_the_same_rows_alike(
    pool: asyncpg.Pool, drawn: list[Row]
) -> None:
    async with connection(pool) as conn:
        await tables.drop_tables(conn, PROJECTION, 1)
        await tables.create_tables(conn, PROJECTION, 1)
        await tables.copy_rows(conn, PROJECTION, 1, {TABLE.base: drawn})
        by_order: dict[str, list[Row]] = {}
        for row in drawn:
            by_order.setdefault(str(row[0]), []).append(row)
        expected = {order_id: table_checksum(TABLE, rows) for order_id, rows in by_order.items()}
        assert await server_checksums(conn) == expected


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
async def test_jsonb_text_is_the_text_the_server_gives_back(pool: asyncpg.Pool, value: Any) -> None:
    assert await pool.fetchval("SELECT $1::text::jsonb::text", orjson.dumps(value).decode()) == jsonb_text(
        value
    )


async def test_any_change_to_a_row_changes_its_orders_checksum(pool: asyncpg.Pool) -> None:
    order_id = uuid.UUID(int=1)
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    base: Row = (order_id, 1, "a", 5, True, at, '{"x":1}', {"a": 1}, [orjson.Fragment(b"19.90")])
    changed = [
        (order_id, 1, "b", 5, True, at, '{"x":1}', {"a": 1}, [orjson.Fragment(b"19.90")]),
        (order_id, 1, "a", 6, True, at, '{"x":1}', {"a": 1}, [orjson.Fragment(b"19.90")]),
        (order_id, 1, "a", 5, None, at, '{"x":1}', {"a": 1}, [orjson.Fragment(b"19.90")]),
        (
            order_id,
            1,
            "a",
            5,
            True,
            at + timedelta(microseconds=1),
            '{"x":1}',
            {"a": 1},
            [orjson.Fragment(b"19.90")],
        ),
        (order_id, 1, "a", 5, True, at, '{"x":2}', {"a": 1}, [orjson.Fragment(b"19.90")]),
        (order_id, 1, "a", 5, True, at, '{"x":1}', {"a": 2}, [orjson.Fragment(b"19.90")]),
        (order_id, 1, "a", 5, True, at, '{"x":1}', {"a": 1}, [orjson.Fragment(b"19.9")]),
        (order_id, 1, "", 5, True, at, '{"x":1}', {"a": 1}, [orjson.Fragment(b"19.90")]),
        (order_id, 1, None, 5, True, at, '{"x":1}', {"a": 1}, [orjson.Fragment(b"19.90")]),
    ]
    reference = table_checksum(TABLE, [base])
    assert len({reference, *(table_checksum(TABLE, [row]) for row in changed)}) == len(changed) + 1
    # Order-independent, and a duplicated row shows in the count and the sum.
    second: Row = (order_id, 2, *base[2:])
    assert table_checksum(TABLE, [base, second]) == table_checksum(TABLE, [second, base])
    assert table_checksum(TABLE, [base, base])[1] != reference[1]
    async with connection(pool) as conn:
        await tables.drop_tables(conn, PROJECTION, 1)
        await tables.create_tables(conn, PROJECTION, 1)
        await tables.copy_rows(conn, PROJECTION, 1, {TABLE.base: [base]})
        assert await server_checksums(conn) == {str(order_id): reference}
        await conn.execute(f"UPDATE {TABLE.physical(1)} SET tree = '[19.9]'")
        assert await server_checksums(conn) != {str(order_id): reference}

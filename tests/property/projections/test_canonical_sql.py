"""Verification's two sides agree: the checksum Python writes for rows equals the one the server
computes for the same rows once COPYed, for any value of every supported column type, nullable
(the server's form in `coalesce`) or NOT NULL (bare, its literals merged with the separators)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections import tables
from projections.canonical import checksum_sql, jsonb_text, row_text, sql_checksum, table_checksum
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
#: The same columns, all NOT NULL.
STRICT = Table(
    base="canon_strict",
    columns=tuple(
        Column(c.name, c.sql_type if "NOT NULL" in c.sql_type else f"{c.sql_type} NOT NULL", c.document)
        for c in TABLE.columns
    ),
    primary_key=("id", "line"),
    key="id",
)
PROJECTION = Projection(name="canon", version=1, tables=(TABLE, STRICT), rows=lambda order: {})

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
def rows(draw: st.DrawFn, nullable: bool = True) -> list[Row]:
    def value(strategy: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | strategy if nullable else strategy)

    ids = draw(st.lists(st.uuids(), min_size=1, max_size=3, unique=True))
    return [
        (
            order_id,
            line,
            value(texts),
            value(st.integers(-(2**63), 2**63 - 1)),
            value(st.booleans()),
            value(stamps),
            value(texts),
            # A top-level JSON null is written as SQL NULL.
            value(json_values.filter(lambda v: v is not None)),
            value(json_values.filter(lambda v: v is not None)),
        )
        for order_id in ids
        for line in range(draw(st.integers(1, 3)))
    ]


async def server_checksums(conn: asyncpg.Connection, table: Table = TABLE) -> dict[str, tuple[int, bytes]]:
    records = await conn.fetch(checksum_sql(table, table.physical(1)))
    return {order_id: sql_checksum(count, total) for order_id, count, total in records}


def python_checksums(table: Table, drawn: list[Row]) -> dict[str, tuple[int, bytes]]:
    by_order: dict[str, list[Row]] = {}
    for row in drawn:
        by_order.setdefault(str(row[0]), []).append(row)
    return {order_id: table_checksum(table, rows) for order_id, rows in by_order.items()}


async def assert_checksummed_alike(pool: asyncpg.Pool, nullable: list[Row], strict: list[Row]) -> None:
    """Both tables hold exactly these rows; the server's checksums equal Python's, per order."""
    async with connection(pool) as conn:
        await tables.drop_tables(conn, PROJECTION, 1)
        await tables.create_tables(conn, PROJECTION, 1)
        await tables.copy_rows(conn, PROJECTION, 1, {TABLE.base: nullable, STRICT.base: strict})
        assert await server_checksums(conn) == python_checksums(TABLE, nullable)
        assert await server_checksums(conn, STRICT) == python_checksums(STRICT, strict)


@settings(max_examples=60)
@given(drawn=rows(), strict=rows(nullable=False))
async def test_python_and_the_server_checksum_the_same_rows_alike(
    pool: asyncpg.Pool, drawn: list[Row], strict: list[Row]
) -> None:
    await assert_checksummed_alike(pool, drawn, strict)


async def test_booleans_and_nulls_in_one_row_are_written_alike(pool: asyncpg.Pool) -> None:
    """`||` with a NULL is NULL, and boolean's output function writes `t`/`f`: neither may leak
    into the server's text."""
    at = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    nulls: list[Row] = [
        (uuid.UUID(int=1), 0, None, None, True, None, None, None, None),
        (uuid.UUID(int=1), 1, None, None, False, None, None, None, None),
        (uuid.UUID(int=2), 0, None, None, None, None, None, None, None),
        (uuid.UUID(int=3), 0, "a", None, True, None, None, None, [True, None]),
    ]
    strict: list[Row] = [
        (uuid.UUID(int=1), 0, "", 0, True, at, "", {"x": False}, [True]),
        (uuid.UUID(int=1), 1, "f", -1, False, at, "t", False, False),
    ]
    assert (
        row_text(TABLE, nulls[0]) == f'["{uuid.UUID(int=1)}",0,null,null,true,null,null,null,null]'.encode()
    )
    assert (
        row_text(TABLE, nulls[2]) == f'["{uuid.UUID(int=2)}",0,null,null,null,null,null,null,null]'.encode()
    )
    assert row_text(STRICT, strict[1]).startswith(f'["{uuid.UUID(int=1)}",1,"f",-1,false,'.encode())
    await assert_checksummed_alike(pool, nulls, strict)


@settings(max_examples=80)
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

"""Physical read-model tables of one projection version: DDL and row writes.

Live batches replace each touched order's rows (delete by order id, then COPY): simpler and
cheaper than per-row upserts, and it makes a batch idempotent by construction. Bulk rebuilds
COPY into bare tables and add the primary key and indexes afterwards.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from ledger.domain.state import Order
from projections import checksums
from projections.definition import Projection, Row
from projections.quarantine import Failure, describe

#: Errors the rows of one order can cause in a write (a value the database or its codec cannot
#: take), as opposed to a lost connection or a cancelled statement, which stop the batch.
ROW_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # asyncpg's client-side DataError is one
    TypeError,
    ArithmeticError,  # OverflowError: a datetime that cannot be converted to UTC
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
)


def rows_by_table(projection: Projection, orders: Iterable[Order]) -> dict[str, list[Row]]:
    """Every row of `orders`, grouped by table base name."""
    out: dict[str, list[Row]] = {t.base: [] for t in projection.tables}
    for order in orders:
        for base, rows in projection.rows(order).items():
            out[base].extend(rows)
    return out


async def create_tables(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
    """Bare tables (no key, no indexes) for a bulk load; replaces leftovers of a failed build.

    json, jsonb and text values are compressed with lz4 where the server supports it: documents
    are over the TOAST threshold (~2 kB), and PostgreSQL's default pglz compression was measured
    at about a third of the server's COPY time for `order_state`; lz4 is several times faster.
    Only the storage differs: the values read back are the same.

    A table holding documents keeps them out of line (`toast_tuple_target` 128 bytes: every
    compressed document moves to the TOAST table), so its heap holds only the filter columns,
    a third of the size: each index build and ANALYZE scans that heap, and the index phase of
    an `order_state` rebuild took about 1.8 s instead of 2.3-3.2 s for 1M events.
    """
    lz4 = await _lz4(conn)
    for table in projection.tables:
        name = table.physical(version)
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.execute(table.create_sql(version))
        if any(column.document for column in table.columns):
            await conn.execute(f"ALTER TABLE {name} SET (toast_tuple_target = 128)")
        for column in table.columns:
            if lz4 and column.sql_type.split()[0].lower() in ("json", "jsonb", "text"):
                await conn.execute(f"ALTER TABLE {name} ALTER COLUMN {column.name} SET COMPRESSION lz4")
            if column.document:
                await conn.execute(f"ALTER TABLE {name} ALTER COLUMN {column.name} SET STATISTICS 0")


async def _lz4(conn: asyncpg.Connection) -> bool:
    """Whether the server was built with lz4 (PostgreSQL 14+ with `--with-lz4`)."""
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL default_toast_compression = 'lz4'")
    except (asyncpg.InvalidParameterValueError, asyncpg.FeatureNotSupportedError):
        return False
    return True


async def create_indexes(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    helpers: Sequence[asyncpg.Connection] = (),
) -> None:
    """Primary keys and list-filter indexes, then fresh statistics for the planner.

    Index builds are spread over `conn` and the `helpers` connections (each takes the next
    statement when done: a bulk load's index phase is CPU-bound sorting, one core per build),
    with a large `maintenance_work_mem`, so sorts stay in memory instead of spilling runs to
    disk. Each build is its own transaction: a transaction's id holds back the fence of every
    reader on the cluster (live runners, the relay) until it ends, so none spans the phase.
    """
    queue = [statement for table in projection.tables for statement in table.index_builds(version)]

    async def build(c: asyncpg.Connection) -> None:
        await c.execute("SET maintenance_work_mem = '256MB'")
        while queue:
            await c.execute(queue.pop(0))
        await c.execute("RESET maintenance_work_mem")

    await _all_or_none([build(c) for c in (conn, *helpers)])
    for table in projection.tables:
        await conn.execute(table.primary_key_sql(version))
    # Statistics for the planner, one table per connection at a time (ANALYZE reads a sample).
    tables_left = [table.physical(version) for table in projection.tables]

    async def analyze(c: asyncpg.Connection) -> None:
        while tables_left:
            await c.execute(f"ANALYZE {tables_left.pop(0)}")

    await _all_or_none([analyze(c) for c in (conn, *helpers)])


async def _all_or_none(jobs: Sequence[Coroutine[Any, Any, None]]) -> None:
    """Run `jobs` at once; the first failure cancels the others (their statements are cancelled
    on the server) before it is raised, so no connection is left mid-statement."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def drop_tables(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
    for table in projection.tables:
        await conn.execute(f"DROP TABLE IF EXISTS {table.physical(version)}")
    await checksums.drop(conn, projection, version)


async def estimated_rows(conn: asyncpg.Connection, projection: Projection, version: int) -> int:
    """The planner's row estimate over a version's tables (exact right after ANALYZE)."""
    names = [t.physical(version) for t in projection.tables]
    count: int = await conn.fetchval(
        "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class"
        " WHERE oid = ANY(SELECT to_regclass(n) FROM unnest($1::text[]) AS n)",
        names,
    )
    return count


async def tables_exist(conn: asyncpg.Connection, projection: Projection, version: int) -> bool:
    names = [t.physical(version) for t in projection.tables]
    count: int = await conn.fetchval(
        "SELECT count(*) FROM unnest($1::text[]) AS n(name) WHERE to_regclass(n.name) IS NOT NULL", names
    )
    return count == len(names)


_JSON_BINARY: weakref.WeakSet[Any] = weakref.WeakSet()


async def _json_binary(conn: asyncpg.Connection) -> None:
    """Give `json` a binary codec (COPY is binary-only); same orjson encoding as the store's text one.

    Registered once per physical connection: `set_type_codec` drops the statement cache.
    """
    raw = getattr(conn, "_con", conn)  # a pool proxy wraps the connection it lends
    if raw in _JSON_BINARY:
        return
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=orjson.dumps, decoder=orjson.loads, format="binary"
    )
    _JSON_BINARY.add(raw)


async def copy_rows(
    conn: asyncpg.Connection, projection: Projection, version: int, rows: dict[str, list[Row]]
) -> None:
    """COPY rows (binary) into a version's tables."""
    await _json_binary(conn)
    for table in projection.tables:
        records = rows.get(table.base)
        if records:
            await conn.copy_records_to_table(
                table.physical(version), records=records, columns=list(table.column_names)
            )


def chunks(orders: Iterable[Order], size: int) -> Iterator[list[Order]]:
    """Orders in lists of `size`, so a bulk COPY never materialises every row at once."""
    batch: list[Order] = []
    for order in orders:
        batch.append(order)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def replace_orders(
    conn: asyncpg.Connection, projection: Projection, version: int, orders: Iterable[Order]
) -> int:
    """Replace every row of `orders` in a version's tables; returns the number of orders."""
    batch = list(orders)
    if not batch:
        return 0
    ids: list[Any] = [order.id for order in batch]
    for table in projection.tables:
        await conn.execute(f"DELETE FROM {table.physical(version)} WHERE {table.key} = ANY($1::uuid[])", ids)
    await copy_rows(conn, projection, version, rows_by_table(projection, batch))
    return len(batch)


async def replace_each(
    conn: asyncpg.Connection, projection: Projection, version: int, states: dict[str, Order]
) -> list[Failure]:
    """Replace each order's rows on its own (a savepoint per order); returns the orders refused.

    The slow path behind `replace_orders`, taken only after a batch's write failed: it finds
    the orders whose rows cannot be written (their row function raised, or the database or its
    codec refused a value) so they are quarantined and the others are written.
    """
    failures: list[Failure] = []
    for stream, order in states.items():
        try:
            rows = rows_by_table(projection, [order])
        except Exception as exc:  # the row function is pure: its error is this order's
            failures.append(Failure(stream, order.version, None, describe(exc)))
            continue
        try:
            async with conn.transaction():
                for table in projection.tables:
                    await conn.execute(
                        f"DELETE FROM {table.physical(version)} WHERE {table.key} = $1::uuid", order.id
                    )
                await copy_rows(conn, projection, version, rows)
        except ROW_ERRORS as exc:
            failures.append(Failure(stream, order.version, None, describe(exc)))
    return failures


async def copy_each(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    orders: Sequence[tuple[str, int, Mapping[str, Sequence[Row]]]],
) -> list[Failure]:
    """COPY each `(stream, last version, rows)` on its own (a bulk chunk whose COPY failed);
    returns the refused.

    Outside a transaction each COPY commits on its own, so a refused order leaves no row.
    """
    failures: list[Failure] = []
    for stream, last_version, rows in orders:
        try:
            await copy_rows(conn, projection, version, {base: list(r) for base, r in rows.items()})
        except ROW_ERRORS as exc:
            failures.append(Failure(stream, last_version, None, describe(exc)))
    return failures

"""Verification of a built version against an independent fold of the log at one checkpoint.

The rows in the tables went through the bulk load (COPY) and then the live runner's batches
(state cache, delete-and-COPY per touched order). The reference takes none of those paths: it
reads the log up to the same checkpoint per stream (`ORDER BY stream_id, version`), folds each
order from scratch with the domain's `fold`, and maps it with the projection's row function;
the tables are read back from the database. Both sides are reduced to a per-order checksum
over a canonical form of the rows (JSON normalised, timestamps in UTC), plus row counts per
table. Any difference is reported and refuses the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from ledger.domain.events import decode_event
from ledger.domain.state import fold
from ledger.store.pool import init_connection
from ledger.store.records import Checkpoint
from projections.bulk import READ_IN_STREAM_ORDER, gc_paused, peak_rss_kib, worker_context
from projections.definition import Projection, Row, Table
from projections.partition import WHOLE_LOG, StreamRange, stream_ranges

_LOG_SQL = """
SELECT stream_id, version, type, schema_version, data::text, recorded_at FROM events
 WHERE (tx, position) <= ($1::xid8, $2::bigint){streams}
 ORDER BY stream_id, version
"""
_PAGE = 20_000
_MAX_LISTED = 1000


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, UUID):  # asyncpg's own UUID type, which orjson does not know
        return str(value)
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


#: How a column's values are compared (`column_kinds`).
VALUE, JSON, JSONB = "value", "json", "jsonb"


def column_kinds(table: Table) -> tuple[str, ...]:
    """Per column: `json` (text kept as written), `jsonb` (normalised by the server) or a plain value."""
    kinds = {"json": JSON, "jsonb": JSONB}
    return tuple(kinds.get(c.sql_type.split()[0].lower(), VALUE) for c in table.columns)


def _json_text(value: Any) -> orjson.Fragment:
    """A `json` value as the text the column holds: `json` keeps what the codecs wrote, verbatim.

    The tables are read with `::text`, so both sides embed that exact text in the canonical row
    (compared byte for byte, no parse or re-serialisation): a row function's Fragment is the
    text the codecs wrote, anything else is written as they write it (orjson).
    """
    if isinstance(value, str):
        return orjson.Fragment(value)
    if isinstance(value, orjson.Fragment):
        return value
    return orjson.Fragment(orjson.dumps(value, default=_default))


def _jsonb_canonical(value: Any) -> orjson.Fragment:
    """A `jsonb` value's canonical JSON: the server reorders keys and respaces, so sort and respace both sides."""
    if not isinstance(value, str | bytes):
        value = orjson.dumps(value, default=_default)  # a Fragment's own text, or the value's
    return orjson.Fragment(orjson.dumps(orjson.loads(value), option=orjson.OPT_SORT_KEYS))


def canonical_row(row: Iterable[Any], kinds: Sequence[str]) -> bytes:
    """A row's canonical bytes: a JSON array, timestamps in UTC, json as its text, jsonb normalised.

    Plain values go straight to orjson (no parse and re-dump of the whole row): the documents,
    which are most of the bytes, are compared as text, and only `jsonb` needs normalising.
    """
    values: list[Any] = []
    for kind, value in zip(kinds, row, strict=True):
        if kind == VALUE:
            values.append(value.astimezone(UTC) if isinstance(value, datetime) else value)
        elif value is None:
            values.append(None)
        elif kind == JSON:
            values.append(_json_text(value))
        else:
            values.append(_jsonb_canonical(value))
    return orjson.dumps(values, default=_default)


def order_checksums(
    projection: Projection, rows: Mapping[str, Sequence[Row]]
) -> dict[str, tuple[int, bytes]]:
    """Per table base: `(row count, checksum)` of one order's rows, order-independent."""
    return {table.base: table_checksum(table, rows.get(table.base, ())) for table in projection.tables}


def table_checksum(table: Table, rows: Sequence[Row]) -> tuple[int, bytes]:
    """`(row count, checksum)` of one order's rows in one table, order-independent."""
    encode = _encoder(table)
    encoded = sorted([encode(r) for r in rows])
    return len(encoded), hashlib.blake2b(b"\n".join(encoded), digest_size=16).digest()


#: Per table (by identity: hashing a frozen Table hashes every column, and this is looked up
#: for every row verified), the table and its row encoder.
_ENCODERS: dict[int, tuple[Table, Callable[[Sequence[Any]], bytes]]] = {}


def _encoder(table: Table) -> Callable[[Sequence[Any]], bytes]:
    """`canonical_row` for this table's rows, specialised: a table without json/jsonb columns
    only needs its timestamps in UTC, and the row goes to orjson whole."""
    entry = _ENCODERS.get(id(table))
    if entry is not None and entry[0] is table:
        return entry[1]
    kinds = column_kinds(table)
    encode: Callable[[Sequence[Any]], bytes]
    if any(kind != VALUE for kind in kinds):

        def encode(row: Sequence[Any]) -> bytes:
            return canonical_row(row, kinds)

    else:
        stamps = [i for i, c in enumerate(table.columns) if c.sql_type.lower().startswith("timestamp")]

        def encode(row: Sequence[Any]) -> bytes:
            values = list(row)
            for i in stamps:
                value = values[i]
                if isinstance(value, datetime):
                    values[i] = value.astimezone(UTC)
            return orjson.dumps(values, default=_default)

    _ENCODERS[id(table)] = (table, encode)
    return encode


@dataclass
class Difference:
    order_id: str
    table: str
    kind: str  # "missing" (in the fold, not the table), "extra", or "different"


@dataclass
class VerifyReport:
    """Outcome of a verification; `ok` only when counts and every per-order checksum match."""

    projection: str
    version: int
    checkpoint: Checkpoint
    orders: int = 0
    expected_rows: dict[str, int] = field(default_factory=dict)
    actual_rows: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    difference_count: int = 0

    @property
    def ok(self) -> bool:
        return self.difference_count == 0 and self.expected_rows == self.actual_rows

    def as_json(self, limit: int = 20) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checkpoint": [self.checkpoint.tx, self.checkpoint.position],
            "orders": self.orders,
            "expected_rows": self.expected_rows,
            "actual_rows": self.actual_rows,
            "difference_count": self.difference_count,
            "differences": [d.__dict__ for d in self.differences[:limit]],
        }


Checksums = dict[str, dict[str, tuple[int, bytes]]]


async def expected_checksums(
    conn: asyncpg.Connection, projection: Projection, checkpoint: Checkpoint, part: StreamRange = WHOLE_LOG
) -> Checksums:
    """Checksums from an independent per-stream fold of every event up to `checkpoint`."""
    out: Checksums = {}
    stream: str | None = None
    batch: list[Any] = []

    def flush() -> None:
        if not batch:
            return
        order = fold((decode_event(r[2], r[4], schema_version=r[3]), r[1], r[5]) for r in batch)
        out[str(order.id)] = order_checksums(projection, dict(projection.rows(order)))

    streams, args = part.where("stream_id", 3)
    async with conn.transaction(readonly=True):
        await conn.execute(READ_IN_STREAM_ORDER)
        cursor = await conn.cursor(
            _LOG_SQL.format(streams=streams), checkpoint.tx, checkpoint.position, *args
        )
        while page := await cursor.fetch(_PAGE):
            for row in page:
                if row[0] != stream:
                    flush()
                    batch, stream = [], row[0]
                batch.append(row)
    flush()
    return out


async def actual_checksums(
    conn: asyncpg.Connection, projection: Projection, version: int, part: StreamRange = WHOLE_LOG
) -> Checksums:
    """Checksums of what a version's tables hold, per order (rows streamed in key order)."""
    out: Checksums = {}
    for table in projection.tables:
        columns = [
            f"{name}::text" if kind != VALUE else name
            for name, kind in zip(table.column_names, column_kinds(table), strict=True)
        ]
        # The same range predicate as the log side, on the stream id each row belongs to.
        streams, args = part.where(f"('order-' || {table.key}::text)", 1)
        sql = (
            f"SELECT {', '.join(columns)} FROM {table.physical(version)}"
            f" WHERE true{streams} ORDER BY {table.key}"
        )
        key_index = table.column_names.index(table.key)
        current: str | None = None
        rows: list[Row] = []
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            while page := await cursor.fetch(_PAGE):
                for record in page:
                    order_id = str(record[key_index])
                    if order_id != current:
                        _add(out, projection, table.base, current, rows)
                        current, rows = order_id, []
                    rows.append(tuple(record))
        _add(out, projection, table.base, current, rows)
    return out


def _add(out: Checksums, projection: Projection, base: str, order_id: str | None, rows: list[Row]) -> None:
    if order_id is not None:
        out.setdefault(order_id, {})[base] = table_checksum(projection.table(base), rows)


def compare(
    projection: Projection, version: int, checkpoint: Checkpoint, expected: Checksums, actual: Checksums
) -> VerifyReport:
    """The report of one partition (or of the whole log)."""
    report = VerifyReport(projection.name, version, checkpoint, orders=len(expected))
    empty = order_checksums(projection, {})
    for table in projection.tables:
        base = table.base
        report.expected_rows[base] = sum(c.get(base, empty[base])[0] for c in expected.values())
        report.actual_rows[base] = sum(c.get(base, empty[base])[0] for c in actual.values())
    for order_id in sorted(expected.keys() | actual.keys()):
        want = expected.get(order_id, empty)
        have = actual.get(order_id, empty)
        for table in projection.tables:
            base = table.base
            if want.get(base, empty[base]) == have.get(base, empty[base]):
                continue
            kind = "missing" if base not in have else "extra" if want[base][0] == 0 else "different"
            report.difference_count += 1
            if len(report.differences) < _MAX_LISTED:
                report.differences.append(Difference(order_id, base, kind))
    return report


async def verify_part(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    checkpoint: Checkpoint,
    part: StreamRange,
) -> VerifyReport:
    with gc_paused():  # same reason as the bulk fold: large, long-lived, cycle-free data
        expected = await expected_checksums(conn, projection, checkpoint, part)
        actual = await actual_checksums(conn, projection, version, part)
        return compare(projection, version, checkpoint, expected, actual)


def _verify_worker(
    dsn: str, projection: Projection, version: int, checkpoint: Checkpoint, part: StreamRange
) -> tuple[VerifyReport, int]:
    async def main() -> VerifyReport:
        conn = await asyncpg.connect(dsn, server_settings={"statement_timeout": "0"})
        try:
            await init_connection(conn)
            return await verify_part(conn, projection, version, checkpoint, part)
        finally:
            await conn.close()

    return asyncio.run(main()), peak_rss_kib()


async def verify(
    conn: asyncpg.Connection,
    projection: Projection,
    version: int,
    checkpoint: Checkpoint,
    *,
    dsn: str | None = None,
    workers: int = 1,
    executor: Executor | None = None,
    note_peak: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Compare `version`'s tables (which must be exactly at `checkpoint`) with a fresh fold.

    With `workers > 1` the log is split by stream id range, as in the bulk load, across processes
    (`executor`'s, e.g. the rebuild's already running workers, else a pool of their own);
    `note_peak` gets the largest peak RSS (KiB) a worker reported.
    """
    ranges = await stream_ranges(conn, workers, checkpoint) if dsn is not None else [WHOLE_LOG]
    if dsn is None or len(ranges) == 1:
        return await verify_part(conn, projection, version, checkpoint, ranges[0])
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as stack:
        if executor is None:
            executor = stack.enter_context(ProcessPoolExecutor(workers, mp_context=worker_context()))
        results = await asyncio.gather(
            *(
                loop.run_in_executor(executor, _verify_worker, dsn, projection, version, checkpoint, part)
                for part in ranges
            )
        )
    if note_peak is not None:
        note_peak(max(peak for _, peak in results))
    report = VerifyReport(projection.name, version, checkpoint)
    for part, _ in results:
        report.orders += part.orders
        for base, count in part.expected_rows.items():
            report.expected_rows[base] = report.expected_rows.get(base, 0) + count
        for base, count in part.actual_rows.items():
            report.actual_rows[base] = report.actual_rows.get(base, 0) + count
        report.difference_count += part.difference_count
        report.differences += part.differences[: _MAX_LISTED - len(report.differences)]
    return report

"""The canonical form of read-model rows, and per-order checksums over it.

Both sides of a verification (rows a fold derived, rows read back from the tables) are reduced
to the same bytes: a JSON array per row, timestamps in UTC, `json` values as their text, `jsonb`
normalised; an order's rows in one table give `(row count, checksum)`, independent of row order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson

from projections.definition import Projection, Row, Table


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    if isinstance(value, UUID):  # asyncpg's own UUID type, which orjson does not know
        return str(value)
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


#: How a column's values are compared (`column_kinds`).
VALUE, JSON, JSONB, DOCUMENT = "value", "json", "jsonb", "document"


def column_kinds(table: Table) -> tuple[str, ...]:
    """Per column: `json` (text kept as written), `jsonb` (normalised by the server), `document`
    (a text document, compared by its SHA-256: hashing a few kB costs less than escaping them into
    the canonical row and hashing that; the server's own `sha256` was measured slower still) or a
    plain value."""
    kinds = {"json": JSON, "jsonb": JSONB}
    return tuple(
        DOCUMENT if c.document and c.sql_type.split()[0].lower() == "text"
        else kinds.get(c.sql_type.split()[0].lower(), VALUE)
        for c in table.columns
    )  # fmt: skip


def document_digest(value: str | None) -> str | None:
    """A document's canonical form: the hex SHA-256 of its UTF-8 text."""
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


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
    """A row's canonical bytes: a JSON array, timestamps in UTC, json as its text, jsonb normalised,
    documents as their digest.

    Plain values go straight to orjson (no parse and re-dump of the whole row), and only `jsonb`
    needs normalising.
    """
    values: list[Any] = []
    for kind, value in zip(kinds, row, strict=True):
        if kind == VALUE:
            values.append(
                value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo is not UTC else value
            )
        elif value is None:
            values.append(None)
        elif kind == DOCUMENT:
            values.append(document_digest(value))
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
    """`canonical_row` for this table's rows, specialised: only the columns that need it (timestamps,
    documents, json, jsonb) are rewritten, by position, and the row goes to orjson whole."""
    entry = _ENCODERS.get(id(table))
    if entry is not None and entry[0] is table:
        return entry[1]
    kinds = column_kinds(table)
    stamps = [i for i, c in enumerate(table.columns) if c.sql_type.lower().startswith("timestamp")]
    rewrites = [
        (i, document_digest if kind == DOCUMENT else _json_text if kind == JSON else _jsonb_canonical)
        for i, kind in enumerate(kinds)
        if kind != VALUE
    ]

    def encode(row: Sequence[Any]) -> bytes:
        values = list(row)
        for i in stamps:
            value = values[i]
            if isinstance(value, datetime) and value.tzinfo is not UTC:
                values[i] = value.astimezone(UTC)
        for i, rewrite in rewrites:
            value = values[i]
            if value is not None:
                values[i] = rewrite(value)
        return orjson.dumps(values, default=_default)

    _ENCODERS[id(table)] = (table, encode)
    return encode

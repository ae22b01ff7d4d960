"""Per-order checksums of read-model rows, computed alike in Python and in SQL.

Both sides of a verification reduce a row to the same text, a compact JSON array with one
element per column: Python (`table_checksum`) writes it with orjson for the rows a fold
derived, the server (`checksum_sql`) for the rows a table holds. So verification reads back one
aggregate per order, never the rows themselves (reading every row and its document back to the
client cost as much as a third of the build).

The server writes the text by concatenating plain casts (`_SQL_FORMS`), as in
`'["' || order_id::text || '",' || to_json(line_id)::text || ',' || line_no::text || ... || ']'`,
not as `array_to_json` of each column's `to_json`: `to_json` looks its argument's type category
up on every call, which cost more than all the rest of the text (the 435k rows of a bench
`order_lines`: 3.0 s against 1.8 s). Only text keeps `to_json`, for its escaping. A nullable
column's form is `coalesce(form, 'null')` (`||` with a NULL is NULL); a NOT NULL one's (by
`Column.sql_type`) goes bare.

Column forms: uuid and text as JSON strings (PostgreSQL escapes them exactly as orjson
does), integers and booleans as JSON literals, timestamptz as integer microseconds since the
epoch (no time zone or date style involved), documents (`Column.document` text) as the hex
SHA-256 of their UTF-8 text, json as its stored text (what the codecs wrote), jsonb as the
server's canonical text (`jsonb_text`: it costs a parse per value, so a column nobody queries
inside is better json), NULL as `null`.

A row's digest is the first 8 bytes of the SHA-256 of its text, as a signed 64-bit integer; an
order's rows in one table give `(row count, sum of digests mod 2**64)`: independent of row
order, so neither side sorts. It detects accidental differences (a lost, extra or changed
row), which is what verification is for; it is not meant to resist a forger.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from hashlib import sha256
from typing import Any

import orjson

from ledger_kernel.wire.codec import dumps
from projections.definition import Column, Projection, Row, Table

__all__ = [
    "checksum_sql",
    "column_kind",
    "document_digest",
    "jsonb_text",
    "order_checksums",
    "row_text",
    "sql_checksum",
    "table_checksum",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MASK = (1 << 64) - 1

TEXT, UUID, INTEGER, BOOLEAN, TIMESTAMP, DOCUMENT, JSON, JSONB = (
    "text", "uuid", "integer", "boolean", "timestamp", "document", "json", "jsonb",
)  # fmt: skip
_KINDS = {
    "text": TEXT,
    "uuid": UUID,
    "smallint": INTEGER,
    "integer": INTEGER,
    "bigint": INTEGER,
    "boolean": BOOLEAN,
    "timestamptz": TIMESTAMP,
    "json": JSON,
    "jsonb": JSONB,
}


def column_kind(column: Column) -> str:
    """How a column is written into the row text; a type with no canonical form is refused here,
    when the encoder is built, not by a false difference in the middle of a verification."""
    sql_type = column.sql_type.split()[0].lower()
    kind = _KINDS.get(sql_type)
    if kind is None:
        raise ValueError(f"column {column.name}: no canonical text for SQL type {sql_type!r}")
    return DOCUMENT if column.document and kind == TEXT else kind


def document_digest(value: str) -> str:
    """A document's form: the hex SHA-256 of its UTF-8 text (hashing a few kB costs less than
    writing them into the row text and hashing that)."""
    return sha256(value.encode()).hexdigest()


def _microseconds(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _jsonb_fragment(value: Any) -> orjson.Fragment:
    return orjson.Fragment(jsonb_text(value))


class _Number(str):
    """A JSON number's literal, kept as text: jsonb keeps `19.90` as written, a float would not."""


def _number(literal: str) -> _Number:
    value = Decimal(literal)
    if value.is_zero():
        value = abs(value)  # numeric has no negative zero
    return _Number(format(value, "f"))


#: escape_json (PostgreSQL): the short escapes, other control characters as `\u00xx`.
_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)} | {
    0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\",
}  # fmt: skip


def _jsonb_key(item: tuple[str, Any]) -> tuple[int, bytes]:
    raw = item[0].encode()
    return len(raw), raw  # jsonb orders object keys by length, then bytes


def _write_jsonb(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value if isinstance(value, _Number) else f'"{value.translate(_ESCAPES)}"')
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(sorted(value.items(), key=_jsonb_key)):
            out.append(f'"{key.translate(_ESCAPES)}": ' if i == 0 else f', "{key.translate(_ESCAPES)}": ')
            _write_jsonb(item, out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(", ")
            _write_jsonb(item, out)
        out.append("]")
    else:
        out.append("null" if value is None else "true" if value is True else "false")


def jsonb_text(value: Any) -> str:
    """The text a jsonb column gives back (`::text`) for a value written as JSON: keys ordered by
    length then bytes (the last of duplicates kept), `, ` and `: ` separators, numbers as numeric
    prints them, strings escaped as the server escapes them."""
    parsed = json.loads(dumps(value), parse_float=_number, parse_int=_number, parse_constant=_reject)
    out: list[str] = []
    _write_jsonb(parsed, out)
    return "".join(out)


def _reject(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


#: The columns orjson cannot write as the server does, rewritten before the row is dumped.
_REWRITES: dict[str, Callable[[Any], Any]] = {
    TIMESTAMP: _microseconds,
    DOCUMENT: document_digest,
    JSONB: _jsonb_fragment,
}


def row_text(table: Table, row: Sequence[Any]) -> bytes:
    """A row's canonical text (see the module docstring), UTF-8."""
    return _encoder(table)(row)


def table_checksum(table: Table, rows: Sequence[Row]) -> tuple[int, bytes]:
    """`(row count, checksum)` of one order's rows in one table, order-independent."""
    encode = _encoder(table)
    total = 0
    for row in rows:
        total += int.from_bytes(sha256(encode(row)).digest()[:8], "big", signed=True)
    return len(rows), _digest_bytes(total)


def _digest_bytes(total: int) -> bytes:
    return (total & _MASK).to_bytes(8, "big")


def order_checksums(
    projection: Projection, rows: Mapping[str, Sequence[Row]]
) -> dict[str, tuple[int, bytes]]:
    """Per table base: `(row count, checksum)` of one order's rows."""
    return {table.base: table_checksum(table, rows.get(table.base, ())) for table in projection.tables}


#: Per table (by identity: hashing a frozen Table hashes every column, and this is looked up
#: for every order), the table and its row encoder.
_ENCODERS: dict[int, tuple[Table, Callable[[Sequence[Any]], bytes]]] = {}


def _encoder(table: Table) -> Callable[[Sequence[Any]], bytes]:
    """The row text writer of one table, specialised: only the columns orjson does not write as
    the server does are rewritten, by position, and the row goes to orjson whole (a fold records
    a checksum for every row it derives)."""
    entry = _ENCODERS.get(id(table))
    if entry is not None and entry[0] is table:
        return entry[1]
    rewrites = [
        (i, _REWRITES[kind])
        for i, kind in enumerate(column_kind(column) for column in table.columns)
        if kind in _REWRITES
    ]

    def encode(row: Sequence[Any]) -> bytes:
        if not rewrites:
            return dumps(row)
        values = list(row)
        for i, rewrite in rewrites:
            value = values[i]
            if value is not None:
                values[i] = rewrite(value)
        return dumps(values)

    _ENCODERS[id(table)] = (table, encode)
    return encode


#: What the server writes for a column, by kind: `(literal before, expression, literal after)`,
#: plain casts and `||` (see the module docstring). Only text needs JSON escaping, and keeps
#: `to_json`; the text of a uuid, of hex digits and of numbers needs none.
_SQL_FORMS = {
    UUID: ('"', "{c}::text", '"'),
    INTEGER: ("", "{c}::text", ""),
    BOOLEAN: ("", "{c}::text", ""),  # `true`/`false` (boolout, as concat() uses, writes t/f)
    TEXT: ("", "to_json({c})::text", ""),
    # Exact on PostgreSQL 14+ (extract returns numeric), whatever the session's time zone.
    TIMESTAMP: ("", "(extract(epoch FROM {c}) * 1000000)::bigint::text", ""),
    DOCUMENT: ('"', "encode(sha256(convert_to({c}, 'UTF8')), 'hex')", '"'),
    JSON: ("", "{c}::text", ""),
    JSONB: ("", "{c}::text", ""),
}
_NOT_NULL = re.compile(r"\bNOT\s+NULL\b", re.IGNORECASE)


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_text(table: Table) -> str:
    """The server's row text of `table`: `'[' || form || ',' || ... || ']'`. A nullable column's
    form goes in `coalesce(form, 'null')` (`||` with a NULL is NULL); a NOT NULL column's literals
    merge with the separators (`'",' || ...`: one `||` less each)."""
    parts: list[tuple[bool, str]] = [(True, "[")]  # (is literal text, text or SQL expression)
    for i, column in enumerate(table.columns):
        if i:
            parts.append((True, ","))
        before, expression, after = _SQL_FORMS[column_kind(column)]
        expression = expression.format(c=column.name)
        if _NOT_NULL.search(column.sql_type):
            parts += [(True, before), (False, expression), (True, after)]
        else:
            form = " || ".join(
                p for p in (before and _sql_literal(before), expression, after and _sql_literal(after)) if p
            )
            parts.append((False, f"coalesce({form}, 'null')"))
    parts.append((True, "]"))
    merged: list[tuple[bool, str]] = []
    for literal, text in parts:
        if literal and merged and merged[-1][0]:
            merged[-1] = (True, merged[-1][1] + text)
        elif text:
            merged.append((literal, text))
    return " || ".join(_sql_literal(text) if literal else text for literal, text in merged)


def checksum_sql(table: Table, physical: str, where: str = "") -> str:
    """`SELECT key text, row count, sum of row digests (numeric, as text)` per order of a table:
    the server side of `table_checksum` (`where` is appended after `WHERE true`)."""
    text = f"({_sql_text(table)})"
    digest = f"('x' || encode(substr(sha256(convert_to({text}, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint"
    return (
        f"SELECT {table.key}::text, count(*)::integer, sum({digest})::text"
        f" FROM {physical} WHERE true{where} GROUP BY {table.key}"
    )


def sql_checksum(count: int, total: str) -> tuple[int, bytes]:
    """`checksum_sql`'s count and sum as `table_checksum` gives them."""
    return count, _digest_bytes(int(total))

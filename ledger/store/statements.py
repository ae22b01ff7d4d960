"""The append statements: the `ledger_append` function call, and its single-statement fast path.

`APPEND_ONE_SQL` does what `ledger_append` (migration 0005) does for the most common append,
one event at an exact expected version (0 = no stream) without an idempotency key, as one
plain statement that asyncpg prepares once per connection: no PL/pgSQL call, no arrays, no
CTE. Counted with callgrind on a PostgreSQL 15 backend, it executes about half the instructions
of the function call (bench/append.py prints the resulting rates). Its shape matters: `OFFSET 0`
keeps the JSON parsed once (a flattened subquery would parse it again for the hash), and the
same logic written with CTEs executed about 60,000 instructions more per append.

It keeps the function's contract:
- the stream's head is read before anything is written (the LATERAL scan produces the row
  the INSERT then inserts), so the xid is taken after the append that wrote the head committed
  and `(tx, position)` order stays version order within a stream;
- the same hash chain: `sha256(prev_hash || utf8(stream_id \\n version \\n event_id \\n type \\n
  schema_version \\n data::text \\n metadata::text))` over jsonb's canonical text, which
  `ledger.store.chain.verify_stream` recomputes;
- nothing is inserted when the stream is not at `$2` (no row comes back; the caller reads the
  current version on that rare path), and concurrent appenders at the same version end in a
  unique violation on `(stream_id, version)`, resolved by the caller exactly as for the function.
"""

from __future__ import annotations

APPEND_SQL = (
    "SELECT r_status, r_version, r_positions, r_tx, r_outcome"
    " FROM ledger_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)

#: The one-event insert of the fast path: the expected version checked against the stream's
#: last row, the hash chain computed as `ledger_append` computes it. Written once, used by both
#: fast-path statements below.
_INSERT_ONE = """INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata, prev_hash, hash)
SELECT $1::text, $2::integer + 1, $3::uuid, $4::text, $5::smallint, d.data, d.metadata, h.hash,
       sha256(coalesce(h.hash, ''::bytea) || convert_to(concat_ws(E'\\n',
           $1::text, ($2::integer + 1)::text, $3::uuid::text, $4::text,
           $5::smallint::text, d.data::text, d.metadata::text), 'UTF8'))
  FROM (SELECT $6::text::jsonb AS data, $7::text::jsonb AS metadata OFFSET 0) AS d
  LEFT JOIN LATERAL (
        SELECT e.version, e.hash FROM events e
         WHERE e.stream_id = $1::text ORDER BY e.version DESC LIMIT 1
       ) AS h ON true
 WHERE coalesce(h.version, 0) = $2::integer"""

APPEND_ONE_SQL = f"""
{_INSERT_ONE}
RETURNING position, tx
"""

#: The fast path with a new subject's first data key (`records.NewDataKey`): the key's insert
#: and the event's are one statement, so a new subject's append needs no key-store round trip
#: before it. The event is inserted only if the key's insert won (the one-time filter on `k`):
#: when a concurrent append stored the subject's key first (ON CONFLICT waits for it to commit),
#: `key_won` is false, nothing is appended, and the caller seals again under the stored key, so
#: every event of a subject is sealed under its one live key. The stored key comes back with
#: the answer (`live_*`) when it was committed before the statement began (a known subject the
#: codec had not cached: no key-store statement either); when it is NULL (committed during the
#: statement) the caller asks the key store. If the key won but the stream was not at `$2`, the
#: key stays stored (a live key without events yet) and `position` is NULL.
APPEND_ONE_KEY_SQL = f"""
WITH k AS (
    INSERT INTO privacy_keys (key_id, subject, wrapped, kek_id) VALUES ($8::uuid, $9::text, $10::bytea, $11::text)
    ON CONFLICT (subject) WHERE destroyed_at IS NULL DO NOTHING
    RETURNING key_id
), ins AS (
{_INSERT_ONE} AND EXISTS (SELECT 1 FROM k)
    RETURNING position, tx
)
SELECT EXISTS (SELECT 1 FROM k) AS key_won, i.position, i.tx, l.key_id AS live_key_id, l.wrapped AS live_wrapped
  FROM (SELECT 1) AS one
  LEFT JOIN ins AS i ON true
  LEFT JOIN privacy_keys AS l ON l.subject = $9::text AND l.destroyed_at IS NULL
"""

"""The per-stream hash chain (tamper evidence), recomputed from stored rows.

`ledger_append` (migration 0005) computes, for each event,
`hash = sha256(prev_hash || utf8(stream_id \\n version \\n event_id \\n type \\n schema_version
\\n data::text \\n metadata::text))` where `data::text` is jsonb's canonical text. jsonb's text
form is deterministic for a value, so the chain is recomputed here from `data::text` without
caring how the JSON was first written. Stream ids and type names never contain newlines and
jsonb text escapes them, so the joined form is unambiguous.
"""

from __future__ import annotations

import hashlib
from uuid import UUID

from ledger.store.records import ChainVerification, Executor

_ROWS = """
SELECT version, event_id, type, schema_version, data::text AS data, metadata::text AS metadata,
       prev_hash, hash
  FROM events WHERE stream_id = $1 ORDER BY version
"""


def event_hash(
    prev_hash: bytes | None,
    *,
    stream_id: str,
    version: int,
    event_id: UUID,
    type_name: str,
    schema_version: int,
    data_text: str,
    metadata_text: str,
) -> bytes:
    """The chain hash of one event, exactly as the SQL function computes it."""
    body = "\n".join(
        (stream_id, str(version), str(event_id), type_name, str(schema_version), data_text, metadata_text)
    )
    return hashlib.sha256((prev_hash or b"") + body.encode()).digest()


async def verify_stream(conn: Executor, stream_id: str) -> ChainVerification:
    """Recompute a stream's chain; reports the first version that does not verify."""
    rows = await conn.fetch(_ROWS, stream_id)
    prev: bytes | None = None
    for expected_version, row in enumerate(rows, start=1):
        version = row["version"]
        if version != expected_version:
            return ChainVerification(stream_id, len(rows), False, expected_version, "version gap")
        if row["prev_hash"] != prev:
            return ChainVerification(stream_id, len(rows), False, version, "prev_hash does not link")
        computed = event_hash(
            prev,
            stream_id=stream_id,
            version=version,
            event_id=row["event_id"],
            type_name=row["type"],
            schema_version=row["schema_version"],
            data_text=row["data"],
            metadata_text=row["metadata"],
        )
        if computed != row["hash"]:
            return ChainVerification(stream_id, len(rows), False, version, "hash does not match content")
        prev = computed
    return ChainVerification(stream_id, len(rows), True)

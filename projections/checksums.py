"""What a bulk load folded, recorded beside the rows it wrote, for the rebuild's verification.

The bulk fold is a fold of the log. For every order it folded, it records here how many events
it folded (and the last version), and the per-table row counts and checksums of the rows it
derived (`canonical.order_checksums`, the same canonical form verification compares). Verification
then checks, at the same checkpoint:

- against the log: every stream's event count and last version equal what was folded, so no
  event or stream was missed, split or folded twice (`completeness`, one SQL pass);
- against the tables, checksummed by the server: every order's rows match what the fold recorded;
- orders the catch-up touched are folded again from scratch, independently of the runner's
  incremental path, and checked the same way.

This replaces a second fold of the whole log, which cost as much as the build itself. The table
is unlogged (a crash leaves it empty, so a verification after a crash fails instead of
passing) and dropped once the version is verified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from ledger.store.records import Checkpoint
from ledger_kernel.wire.streams import ORDER_STREAM_PREFIX
from projections.definition import Projection
from projections.partition import StreamRange

#: One recorded order: stream id, events folded, last version, rows per table, digests per table.
Record = tuple[str, int, int, list[int], bytes]

_COLUMNS = ("stream_id", "events", "last_version", "row_counts", "digests")
_DIGEST = 8


def table_name(projection: Projection, version: int) -> str:
    return f"{projection.name}_checksums_v{version}"


async def create(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
    name = table_name(projection, version)
    await conn.execute(f"DROP TABLE IF EXISTS {name}")
    await conn.execute(
        f"CREATE UNLOGGED TABLE {name} (stream_id text NOT NULL, events integer NOT NULL,"
        " last_version integer NOT NULL, row_counts integer[] NOT NULL, digests bytea NOT NULL)"
    )


async def drop(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {table_name(projection, version)}")


def record(
    projection: Projection,
    stream_id: str,
    events: int,
    last_version: int,
    checksums: Mapping[str, tuple[int, bytes]],
) -> Record:
    """One order's entry: `checksums` per table base (`canonical.order_checksums`)."""
    per_table = [checksums[table.base] for table in projection.tables]
    return (
        stream_id,
        events,
        last_version,
        [count for count, _ in per_table],
        b"".join(digest for _, digest in per_table),
    )


async def write(
    conn: asyncpg.Connection, projection: Projection, version: int, records: Sequence[Record]
) -> None:
    if records:
        await conn.copy_records_to_table(
            table_name(projection, version), records=records, columns=list(_COLUMNS)
        )


async def recorded(
    conn: asyncpg.Connection, projection: Projection, version: int, part: StreamRange
) -> dict[str, dict[str, tuple[int, bytes]]]:
    """The recorded checksums of a part's orders, keyed by order id (as verification keys them)."""
    streams, args = part.where("stream_id", 1)
    rows = await conn.fetch(
        f"SELECT stream_id, row_counts, digests FROM {table_name(projection, version)} WHERE true{streams}",
        *args,
    )
    bases = [table.base for table in projection.tables]
    out: dict[str, dict[str, tuple[int, bytes]]] = {}
    for stream_id, counts, digests in rows:
        out[stream_id.removeprefix(ORDER_STREAM_PREFIX)] = {
            base: (counts[i], digests[i * _DIGEST : (i + 1) * _DIGEST]) for i, base in enumerate(bases)
        }
    return out


_COMPLETENESS_SQL = """
SELECT coalesce(l.stream_id, c.stream_id), l.events, l.last_version, c.events, c.last_version
  FROM (SELECT stream_id, count(*)::integer AS events, max(version)::integer AS last_version
          FROM events WHERE (tx, position) <= ($1::xid8, $2::bigint){log_streams}
         GROUP BY stream_id) l
  FULL JOIN (SELECT * FROM {table} WHERE true{recorded_streams}) c USING (stream_id)
 WHERE l.events IS DISTINCT FROM c.events OR l.last_version IS DISTINCT FROM c.last_version
"""


async def completeness(
    conn: asyncpg.Connection, projection: Projection, version: int, upper: Checkpoint, part: StreamRange
) -> list[tuple[str, str]]:
    """`(order id, kind)` for every stream whose events at or below `upper` differ from what was folded.

    `missing`: the log has events of a stream that was not folded; `extra`: a stream was folded
    that has no events there; `different`: event count or last version differ.
    """
    log_streams, args = part.where("stream_id", 3)
    recorded_streams, _ = part.where("stream_id", 3)
    sql = _COMPLETENESS_SQL.format(
        table=table_name(projection, version), log_streams=log_streams, recorded_streams=recorded_streams
    )
    out: list[tuple[str, str]] = []
    for stream_id, log_events, _, folded_events, _ in await conn.fetch(sql, upper.tx, upper.position, *args):
        kind = "missing" if folded_events is None else "extra" if log_events is None else "different"
        out.append((stream_id.removeprefix(ORDER_STREAM_PREFIX), kind))
    return out


async def touched_streams(
    conn: asyncpg.Connection, upper: Checkpoint, checkpoint: Checkpoint, part: StreamRange
) -> list[str]:
    """Streams of a part with events after `upper` up to `checkpoint` (what the catch-up applied)."""
    streams, args = part.where("stream_id", 5)
    rows = await conn.fetch(
        "SELECT DISTINCT stream_id FROM events"
        " WHERE (tx, position) > ($1::xid8, $2::bigint) AND (tx, position) <= ($3::xid8, $4::bigint)"
        f"{streams}",
        upper.tx,
        upper.position,
        checkpoint.tx,
        checkpoint.position,
        *args,
    )
    return [r[0] for r in rows]

"""The relay's acknowledged end offsets per partition (`relay_offsets`), saved with its checkpoint.

Why persisted: the relay must know what the broker owes it across its own restarts, or a topic
lost while the relay was down would look like a fresh one and the checkpoint would move on over
records nobody can read. Saved in the checkpoint's statement: still one round trip per batch.
"""

from __future__ import annotations

from collections.abc import Mapping

from ledger.store.records import Checkpoint, Connection, Executor

_SAVE_SQL = """
WITH saved AS (
    INSERT INTO checkpoints (name, tx, position) VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, position = excluded.position,
        updated_at = clock_timestamp()
)
INSERT INTO relay_offsets (name, partition, end_offset)
SELECT $1, p, o FROM unnest($4::integer[], $5::bigint[]) AS u(p, o)
ON CONFLICT (name, partition) DO UPDATE SET end_offset = excluded.end_offset, updated_at = clock_timestamp()
"""


async def load_offsets(db: Executor, name: str) -> dict[int, int]:
    """Partition -> end offset the broker acknowledged to relay `name` (empty: nothing yet)."""
    rows = await db.fetch("SELECT partition, end_offset FROM relay_offsets WHERE name = $1", name)
    return {row["partition"]: row["end_offset"] for row in rows}


async def save_checkpoint_and_offsets(
    conn: Connection, name: str, checkpoint: Checkpoint, ends: Mapping[int, int]
) -> None:
    """The checkpoint and the end offsets acknowledged for it, in one statement."""
    await conn.execute(_SAVE_SQL, name, checkpoint.tx, checkpoint.position, list(ends), list(ends.values()))


async def replace_offsets(conn: Connection, name: str, ends: Mapping[int, int]) -> None:
    """Set the offsets to `ends` exactly (after a re-publish: what the broker holds now)."""
    async with conn.transaction():
        await conn.execute("DELETE FROM relay_offsets WHERE name = $1", name)
        await conn.execute(
            "INSERT INTO relay_offsets (name, partition, end_offset)"
            " SELECT $1, p, o FROM unnest($2::integer[], $3::bigint[]) AS u(p, o)",
            name,
            list(ends),
            list(ends.values()),
        )

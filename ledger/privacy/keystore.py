"""Where data keys live: a small protocol, and its PostgreSQL-table implementation.

The protocol is what the codec and the erasure need, so a KMS or Vault backend can take the
table's place (docs/privacy.md#keys). `PgKeyStore` keeps only wrapped keys (the KEK never
reaches the database) in migration 0010's `privacy_keys`. (The order-to-subject index,
`privacy_orders`, is read from the events' metadata: migration 0012.) Destroying a key sets `wrapped` to NULL; the row stays as the erasure's record.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from ledger.privacy.cipher import DataKey, Keyring
from ledger.store import Executor
from ledger.store.pool import fetch_clean

__all__ = ["DestroyedKey", "KeyStore", "MemoryKeyStore", "PgKeyStore"]


@dataclass(frozen=True, slots=True)
class DestroyedKey:
    key_id: UUID
    destroyed_at: datetime


class KeyStore(Protocol):
    """Data keys per subject."""

    async def live_key(self, subject: str) -> DataKey:
        """The subject's live key (a new one if it has none, e.g. after an erasure)."""
        ...

    async def keys(self, key_ids: Collection[UUID]) -> dict[UUID, DataKey | None]:
        """The keys by id; None for a destroyed (or unknown) key."""
        ...

    async def destroy(self, subjects: Sequence[str], *, erased_by: str, basis: str) -> list[DestroyedKey]:
        """Destroy every live key of `subjects`; returns what was destroyed now (empty if nothing was live)."""
        ...


_LIVE_SQL = """
WITH k AS (
    INSERT INTO privacy_keys (key_id, subject, wrapped, kek_id) VALUES ($1, $2, $3, $4)
    ON CONFLICT (subject) WHERE destroyed_at IS NULL DO NOTHING
    RETURNING key_id, wrapped
)
SELECT key_id, wrapped FROM k
UNION ALL
SELECT key_id, wrapped FROM privacy_keys WHERE subject = $2 AND destroyed_at IS NULL
LIMIT 1
"""
_KEYS_SQL = "SELECT key_id, wrapped FROM privacy_keys WHERE key_id = ANY($1::uuid[])"
_DESTROY_SQL = """
UPDATE privacy_keys SET wrapped = NULL, destroyed_at = clock_timestamp(), erased_by = $2, basis = $3
 WHERE subject = ANY($1::text[]) AND destroyed_at IS NULL
RETURNING key_id, destroyed_at
"""


class PgKeyStore:
    """`KeyStore` over PostgreSQL tables; keys wrapped by `keyring`."""

    def __init__(self, db: Executor, keyring: Keyring) -> None:
        self.db = db
        self.keyring = keyring

    async def live_key(self, subject: str) -> DataKey:
        for _ in range(5):
            fresh = DataKey.generate(uuid.uuid4())
            # Session-neutral statements: on a pool, no reset round trip after each (a new
            # subject's append waits for this one).
            rows = await fetch_clean(
                self.db, _LIVE_SQL, fresh.key_id, subject, self.keyring.wrap(fresh), self.keyring.kek_id
            )
            row = rows[0] if rows else None
            # No row: a concurrent writer created the subject's key after this statement's
            # snapshot was taken (ON CONFLICT waited for it); the next try sees it.
            if row is not None:
                if row["key_id"] == fresh.key_id:
                    return fresh
                return self.keyring.unwrap(row["key_id"], row["wrapped"])
        raise RuntimeError("could not open a data key")

    async def keys(self, key_ids: Collection[UUID]) -> dict[UUID, DataKey | None]:
        found: dict[UUID, DataKey | None] = dict.fromkeys(key_ids)
        for row in await fetch_clean(self.db, _KEYS_SQL, list(key_ids)):
            if row["wrapped"] is not None:
                found[row["key_id"]] = self.keyring.unwrap(row["key_id"], row["wrapped"])
        return found

    async def destroy(self, subjects: Sequence[str], *, erased_by: str, basis: str) -> list[DestroyedKey]:
        rows = await self.db.fetch(_DESTROY_SQL, list(subjects), erased_by, basis)
        return [DestroyedKey(r["key_id"], r["destroyed_at"]) for r in rows]


class MemoryKeyStore:
    """`KeyStore` in dictionaries, for unit tests of the codec (never a production store)."""

    def __init__(self) -> None:
        self.live: dict[str, DataKey] = {}
        self.all: dict[UUID, DataKey | None] = {}

    async def live_key(self, subject: str) -> DataKey:
        key = self.live.get(subject)
        if key is None:
            key = self.live[subject] = DataKey.generate(uuid.uuid4())
            self.all[key.key_id] = key
        return key

    async def keys(self, key_ids: Collection[UUID]) -> dict[UUID, DataKey | None]:
        return {k: self.all.get(k) for k in key_ids}

    async def destroy(self, subjects: Sequence[str], *, erased_by: str, basis: str) -> list[DestroyedKey]:
        done = []
        for subject in subjects:
            key = self.live.pop(subject, None)
            if key is not None:
                self.all[key.key_id] = None
                done.append(DestroyedKey(key.key_id, datetime.now().astimezone()))
        return done

"""The asyncpg pool every ledger process uses for the store.

Session settings bound how long a transaction can stay open, because every open writer
transaction holds the xid8 fence back for all readers in the cluster (docs/architecture.md#xid8-fence).
jsonb values are encoded and decoded with orjson in the binary format (no text round trip).

On release, asyncpg resets a pooled connection with a second round trip (`UNLISTEN *; RESET
ALL; ...`), which would double the cost of a one-statement append. The store's own statements
change no session state (its advisory locks are transaction-scoped), so after them it marks the
connection with `release_without_reset()`; every other use of the pool is reset as usual.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from ledger.store.records import Executor
from ledger_kernel.settings import StoreSettings

_JSONB_BINARY_VERSION = b"\x01"


def _encode_jsonb(value: Any) -> bytes:
    return _JSONB_BINARY_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> Any:
    return orjson.loads(data[1:])


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


class LedgerConnection(asyncpg.Connection):
    """A pooled connection that can skip the reset round trip after session-neutral statements."""

    _skip_reset = False

    def release_without_reset(self) -> None:
        """The statements run since acquiring changed no session state (no SET, LISTEN, session
        advisory lock, cursor WITH HOLD, temporary table): skip the reset at this release."""
        self._skip_reset = True

    def get_reset_query(self) -> str:
        """The default reset query, or nothing right after `release_without_reset()`."""
        if self._skip_reset:
            self._skip_reset = False
            return ""
        query: str = super().get_reset_query()
        return query


async def init_connection(conn: asyncpg.Connection) -> None:
    """Register the orjson codecs for jsonb and json, and xid8 as int8, on a new connection.

    asyncpg has no codec for xid8 (every event's `tx`), so it exchanges it as text and calls
    `int()` per value; its binary form is int8's (a big-endian 64-bit integer; xid8 is unsigned
    but stays below 2**63 for 2**31 epochs of xid wraparound), so the builtin int8 codec reads
    it in C: about 0.1 us less per event on every log read.
    """
    await conn.set_builtin_type_codec("xid8", schema="pg_catalog", codec_name="int8", format="binary")
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_encode_jsonb, decoder=_decode_jsonb, format="binary"
    )
    await conn.set_type_codec("json", schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads)


def server_settings(settings: StoreSettings, application_name: str = "ledger") -> dict[str, str]:
    """Session settings for store connections."""
    return {
        "application_name": application_name,
        "statement_timeout": str(settings.statement_timeout_ms),
        "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
    }


async def create_pool(
    dsn: str,
    settings: StoreSettings | None = None,
    *,
    application_name: str = "ledger",
    **kwargs: Any,
) -> asyncpg.Pool:
    """An asyncpg pool with the store's codecs and timeouts; extra kwargs go to `asyncpg.create_pool`."""
    settings = settings or StoreSettings()
    options: dict[str, Any] = {
        "min_size": settings.pool_min_size,
        "max_size": settings.pool_max_size,
        "init": init_connection,
        "connection_class": LedgerConnection,
        "server_settings": server_settings(settings, application_name),
    }
    options.update(kwargs)
    pool = await asyncpg.create_pool(dsn, **options)
    assert pool is not None  # create_pool only returns None when not awaited
    return pool


def _release_without_reset(conn: object) -> None:
    skip = getattr(conn, "release_without_reset", None)
    if skip is not None:  # a pool made by create_pool; other pools reset as usual
        skip()


async def fetch_clean(db: Executor, sql: str, *args: Any) -> list[asyncpg.Record]:
    """`db.fetch` for session-neutral statements: on a pool, skips the reset round trip."""
    if not isinstance(db, asyncpg.Pool):
        return await db.fetch(sql, *args)
    async with db.acquire() as conn:
        rows = await conn.fetch(sql, *args)
        _release_without_reset(conn)
        return rows


async def fetchrow_clean(db: Executor, sql: str, *args: Any) -> asyncpg.Record | None:
    """`db.fetchrow` for session-neutral statements: on a pool, skips the reset round trip."""
    if not isinstance(db, asyncpg.Pool):
        return await db.fetchrow(sql, *args)
    async with db.acquire() as conn:
        row = await conn.fetchrow(sql, *args)
        _release_without_reset(conn)
        return row

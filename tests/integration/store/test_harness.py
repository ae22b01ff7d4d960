"""The Postgres harness gives each test its own migrated database."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.store import create_pool
from ledger.store.pool import fetch_clean
from ledger_kernel.settings import StoreSettings

pytestmark = pytest.mark.postgres


async def test_database_is_fresh_and_migrated(database_url: str, template_database: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT current_database()") != template_database
        assert await conn.fetchval("SELECT count(*) FROM events") == 0
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 5
    finally:
        await conn.close()


async def test_pool_has_orjson_codecs(pool: asyncpg.Pool) -> None:
    assert await pool.fetchval("SELECT '{\"a\": [1, 2]}'::jsonb") == {"a": [1, 2]}
    assert await pool.fetchval("SELECT $1::jsonb ->> 'k'", {"k": "v"}) == "v"
    assert await pool.fetchval("SHOW idle_in_transaction_session_timeout") == "10s"


async def test_store_statements_skip_the_reset_and_other_uses_do_not(database_url: str) -> None:
    pool = await create_pool(database_url, StoreSettings(pool_min_size=1, pool_max_size=1))
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'dirty'")
        assert await pool.fetchval("SHOW application_name") == "ledger"  # the usual reset ran
        # fetch_clean promises a session-neutral statement; break the promise to observe the skip.
        await fetch_clean(pool, "SELECT set_config('application_name', 'kept', false)")
        assert await pool.fetchval("SHOW application_name") == "kept"
        assert await pool.fetchval("SHOW application_name") == "ledger"
    finally:
        await pool.close()

"""Migrations: idempotent, safe to run concurrently, immutable once applied."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from ledger.store import MigrationChecksumMismatch, MigrationError, migrate, pending_migrations
from ledger.store.migrate import load_migrations
from tests.harness.postgres import dsn_with_database

pytestmark = pytest.mark.postgres
_names = itertools.count()


@pytest_asyncio.fixture(loop_scope="session")
async def empty_database(admin_url: str, template_database: str) -> AsyncIterator[str]:
    """An empty database (no migrations), dropped after the test."""
    name = f"{template_database}_empty_{next(_names)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield dsn_with_database(admin_url, name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _store_migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    shutil.copytree(str(resources.files("ledger.store") / "migrations"), folder)
    return folder


async def test_migrate_applies_everything_once(empty_database: str) -> None:
    expected = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    conn = await asyncpg.connect(empty_database)
    try:
        assert await pending_migrations(conn) == expected
        assert await migrate(conn) == expected
        assert await migrate(conn) == []
        assert await migrate(empty_database) == []
        assert await pending_migrations(conn) == []
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        assert [f"{r['version']:04d}_{r['name']}" for r in rows] == expected
    finally:
        await conn.close()


async def test_concurrent_migrate_calls_apply_each_file_once(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate(empty_database) for _ in range(6)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(f"{m.version:04d}_{m.name}" for m in load_migrations())
    assert sum(1 for r in results if r) == 1


async def test_changed_checksum_is_refused(empty_database: str, tmp_path: Path) -> None:
    folder = _store_migrations(tmp_path)
    await migrate(empty_database, [folder])
    events_sql = folder / "0001_events.sql"
    events_sql.write_text(events_sql.read_text() + "\n-- edited after it was applied\n")
    with pytest.raises(MigrationChecksumMismatch, match="0001") as raised:
        await migrate(empty_database, [folder])
    assert "must not change" in str(raised.value)


async def test_failing_migration_rolls_back_and_names_the_file(empty_database: str, tmp_path: Path) -> None:
    folder = _store_migrations(tmp_path)
    (folder / "0019_broken.sql").write_text("CREATE TABLE half_done (id int); SELECT * FROM no_such_table;")
    with pytest.raises(MigrationError, match="0019_broken"):
        await migrate(empty_database, [folder])
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") < 19
    finally:
        await conn.close()


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="0001"):
        load_migrations([tmp_path])

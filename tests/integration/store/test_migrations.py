"""Migrations: idempotent, safe to run concurrently, immutable once applied, collected from every owning package."""

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
from ledger_app.migrations import migrate_all, migration_sources
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
    expected = [f"{m.version:04d}_{m.name}" for m in load_migrations(migration_sources())]
    conn = await asyncpg.connect(empty_database)
    try:
        assert await pending_migrations(conn, migration_sources()) == expected
        assert await migrate_all(conn) == expected
        assert await migrate_all(conn) == []
        assert await migrate_all(empty_database) == []
        assert await pending_migrations(conn, migration_sources()) == []
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        assert [f"{r['version']:04d}_{r['name']}" for r in rows] == expected
    finally:
        await conn.close()


async def test_concurrent_migrate_calls_apply_each_file_once(empty_database: str) -> None:
    results = await asyncio.gather(*(migrate_all(empty_database) for _ in range(6)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == sorted(f"{m.version:04d}_{m.name}" for m in load_migrations(migration_sources()))
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


#: The files that lived in `ledger/store/migrations/` until each package owned its own, with the
#: sha256 a database migrated then recorded for them (frozen: moving them must not change a byte).
_MOVED_OUT_OF_THE_STORE = {
    (40, "projection_versions"): "1c6bd0b0deb1fba2eda4d026a197c7a56148e61c21ac78dedb01f763b7d599cb",
    (42, "projection_quarantine"): "2922ee8bab669251b79bd08bcac55e144c00c3b6f4955107e25dfc91f6d68a7c",
    (60, "fanout"): "dab1d0853b4491beba36d2846c410beeea272f1bfc55384df013098947a671b7",
    (61, "fanout_rate_budget"): "426221b707f333955e719c76a3b0f9aeba1a1da2c9f45a1a22e7e73e464be6dc",
    (62, "fanout_not_applicable"): "aefec7297dee9ab0c719b8c7f74161678f185edcc0d6de4d100a6d67a7d093ec",
    (63, "fanout_categories"): "9be9dd9c1d92b0c9a60e803533d56d0f6b0dbd6e371e88fd24fd169792d1a5f9",
}


async def test_a_database_migrated_from_the_one_folder_layout_migrates_from_the_packages_with_nothing_reapplied(
    empty_database: str, tmp_path: Path
) -> None:
    one_folder = tmp_path / "ledger_store_migrations"  # the old layout: every file in the store's folder
    one_folder.mkdir()
    for source in migration_sources():
        for entry in source.iterdir():
            if entry.name.endswith(".sql"):
                (one_folder / entry.name).write_bytes(entry.read_bytes())
    applied_before = await migrate(empty_database, [one_folder])
    conn = await asyncpg.connect(empty_database)
    try:
        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
        recorded = {(r["version"], r["name"]): r["checksum"] for r in rows}
        assert {key: recorded[key] for key in _MOVED_OUT_OF_THE_STORE} == _MOVED_OUT_OF_THE_STORE
        assert await migrate_all(conn) == []
        assert await pending_migrations(conn, migration_sources()) == []
        after = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
        assert [tuple(r) for r in after] == [tuple(r) for r in rows]
        assert [f"{r['version']:04d}_{r['name']}" for r in after] == applied_before
    finally:
        await conn.close()


async def test_the_write_side_alone_sees_only_its_own_migrations(empty_database: str) -> None:
    own = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    assert own
    assert all(int(name[:4]) < 40 for name in own)
    assert await migrate(empty_database) == own
    conn = await asyncpg.connect(empty_database)
    try:
        assert await pending_migrations(conn) == []
        read_models_and_fanout = await pending_migrations(conn, migration_sources())
        assert read_models_and_fanout == [
            f"{m.version:04d}_{m.name}" for m in load_migrations(migration_sources()) if m.version >= 40
        ]
        assert await migrate_all(conn) == read_models_and_fanout
    finally:
        await conn.close()

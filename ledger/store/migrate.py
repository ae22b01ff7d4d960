"""Plain-SQL migrations applied by a small asyncpg runner (docs/architecture.md#migrations).

Files are `NNNN_name.sql` in each owning package's `migrations/` folder (package data; number
ranges per area are in docs/CONTRACTS.md#migrations): this package's `ledger/store/migrations/`
holds the store's and the write side's. The runner collects the folders it is given and applies
every file in version order, whichever folder it is in; the composition root passes every
package's folder (`ledger_app.migrations`), without a list only the write side's own are seen.
`migrate()` takes a session advisory lock, so concurrent runs (every process may migrate on
start) apply each file once; each file runs in its own transaction together with its
`schema_migrations` row. An applied file whose checksum changed is refused: migrations are
immutable once applied, fixes go in a new file. A file's record is its version, name and
checksum, not its folder, so moving a file between packages re-applies nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import asyncpg

from ledger.store.errors import MigrationChecksumMismatch, MigrationError
from ledger.store.records import Connection

# Arbitrary but fixed: "ledger migrate" as a 63-bit advisory lock key.
MIGRATION_LOCK_KEY = 0x6C65_6467_6572_6D67
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


#: Folders of migration files (package data, or plain folders in tests).
MigrationSources = Sequence[Traversable | Path]


def default_sources() -> list[Traversable]:
    """The folders scanned without a list: the write side's own (store, API tokens, relay)."""
    return [resources.files("ledger.store") / "migrations"]


def load_migrations(sources: Iterable[Traversable | Path] | None = None) -> list[Migration]:
    """Every migration file in `sources`, sorted by version (across folders); a version twice is an error."""
    found: dict[int, Migration] = {}
    for folder in sources if sources is not None else default_sources():
        for entry in folder.iterdir():
            match = _FILE_RE.match(entry.name)
            if not match:
                continue
            migration = Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8"))
            if migration.version in found:
                raise MigrationError(f"two migration files have version {migration.version:04d}")
            found[migration.version] = migration
    return [found[v] for v in sorted(found)]


async def migrate(
    dsn_or_conn: str | Connection,
    sources: Iterable[Traversable | Path] | None = None,
) -> list[str]:
    """Apply pending migrations; returns the names (`NNNN_name`) applied by this call."""
    migrations = load_migrations(sources)
    if isinstance(dsn_or_conn, str):
        conn = await asyncpg.connect(dsn_or_conn)
        try:
            return await _migrate(conn, migrations)
        finally:
            await conn.close()
    return await _migrate(dsn_or_conn, migrations)


async def _migrate(conn: Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        done: list[str] = []
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationChecksumMismatch(
                        migration.version, migration.name, row["checksum"], migration.checksum
                    )
                continue
            label = f"{migration.version:04d}_{migration.name}"
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {label} failed: {exc}") from exc
            done.append(label)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def pending_migrations(conn: Connection, sources: Iterable[Traversable | Path] | None = None) -> list[str]:
    """Names of migrations in `sources` not applied yet (readiness); all of them on an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied: set[int] = set()
    if exists:
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [f"{m.version:04d}_{m.name}" for m in load_migrations(sources) if m.version not in applied]

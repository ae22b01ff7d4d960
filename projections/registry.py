"""Which version of a projection is live, the code hash each was built with, and the views.

Readers query views named after the tables' base names (`order_state`, `order_lines`,
`transactions`); a swap or rollback redefines every view of a projection in one transaction,
so a reader sees either the old version or the new one, never a mix and never a missing
relation. `CREATE OR REPLACE VIEW` keeps the view's identity (prepared statements stay valid);
a version that changes the column list falls back to drop-and-create in the same transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg

from ledger.store import reads
from ledger.store.records import START
from ledger.store.store import load_checkpoint
from projections import tables
from projections.definition import Projection


class ProjectionError(Exception):
    """Base of the errors an operator acts on; messages say what to do."""


class CodeChanged(ProjectionError):
    """The projection's logic changed but its version did not."""

    def __init__(self, name: str, version: int, recorded: str, actual: str) -> None:
        super().__init__(
            f"projection {name!r} v{version} was built by code {recorded[:12]} but this deploy's code is "
            f"{actual[:12]}: the logic changed under an unchanged version. Bump {name}'s VERSION and run "
            f"`ledger projections rebuild {name}` (the live version keeps serving meanwhile)."
        )


class NotBuilt(ProjectionError):
    """This deploy's version has no tables yet while another version is live."""


class RebuildRefused(ProjectionError):
    """A rebuild that would overwrite the live version, or a swap that failed verification."""


class RebuildLocked(RebuildRefused):
    """Another runner or rebuild of the same version holds its lock."""


def _name_lock(name: str) -> int:
    digest = hashlib.sha256(f"ledger-projection-registry:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def lock_registry(conn: asyncpg.Connection, name: str) -> None:
    """Serialise registry changes of one projection (inside the caller's transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _name_lock(name))


async def version_row(conn: asyncpg.Connection, name: str, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT version, code_hash, status, report FROM projection_versions WHERE projection = $1 AND version = $2",
        name,
        version,
    )


async def versions(db: asyncpg.Connection | asyncpg.Pool, name: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT version, code_hash, status, created_at, updated_at, report FROM projection_versions"
        " WHERE projection = $1 ORDER BY version",
        name,
    )


async def live_version(db: asyncpg.Connection | asyncpg.Pool, name: str) -> int | None:
    version: int | None = await db.fetchval(
        "SELECT version FROM projection_versions WHERE projection = $1 AND status = 'live'", name
    )
    return version


def check_code(projection: Projection, row: asyncpg.Record | None) -> None:
    """Refuse a version whose recorded code hash differs from this deploy's."""
    if row is not None and row["code_hash"] != projection.code_hash:
        raise CodeChanged(projection.name, projection.version, row["code_hash"], projection.code_hash)


async def set_status(
    conn: asyncpg.Connection, name: str, version: int, status: str, report: dict[str, Any] | None = None
) -> None:
    await conn.execute(
        "UPDATE projection_versions SET status = $3, updated_at = clock_timestamp(),"
        " report = coalesce($4::jsonb, report) WHERE projection = $1 AND version = $2",
        name,
        version,
        status,
        report,
    )


async def point_views(conn: asyncpg.Connection, projection: Projection, version: int) -> None:
    """Make every view of the projection read `version`'s tables (call inside a transaction)."""
    for table in projection.tables:
        target = table.physical(version)
        try:
            async with conn.transaction():  # savepoint: a changed column list needs drop-and-create
                await conn.execute(f"CREATE OR REPLACE VIEW {table.base} AS SELECT * FROM {target}")
        except asyncpg.InvalidTableDefinitionError:
            await conn.execute(f"DROP VIEW IF EXISTS {table.base}")
            await conn.execute(f"CREATE VIEW {table.base} AS SELECT * FROM {target}")


async def install(conn: asyncpg.Connection, projection: Projection) -> str:
    """Make sure this deploy's version can run; returns its status.

    First deploy of a projection: creates its tables and views and makes it live (the runner
    then catches up from the start). Refuses changed code under a recorded version
    (`CodeChanged`) and a new version while another is live (`NotBuilt`: rebuild first).
    """
    name, version = projection.name, projection.version
    async with conn.transaction():
        await lock_registry(conn, name)
        row = await version_row(conn, name, version)
        check_code(projection, row)
        if row is not None:
            if row["status"] == "failed":
                raise NotBuilt(
                    f"projection {name!r} v{version} failed verification; fix it and run "
                    f"`ledger projections rebuild {name}` again"
                )
            return str(row["status"])
        live = await live_version(conn, name)
        if live is not None:
            raise NotBuilt(
                f"projection {name!r} v{version} is not built yet (v{live} is live): run "
                f"`ledger projections rebuild {name}`, which builds v{version} beside v{live} and swaps when verified"
            )
        await tables.create_tables(conn, projection, version)
        await tables.create_indexes(conn, projection, version)
        await conn.execute(
            "INSERT INTO projection_versions (projection, version, code_hash, status) VALUES ($1, $2, $3, 'live')",
            name,
            version,
            projection.code_hash,
        )
        await point_views(conn, projection, version)
        return "live"


async def begin_build(conn: asyncpg.Connection, projection: Projection) -> int | None:
    """Register this deploy's version as building; returns the live version (None if none).

    Refuses to rebuild the live version in place: blue/green needs a new version number.
    """
    name, version = projection.name, projection.version
    async with conn.transaction():
        await lock_registry(conn, name)
        live = await live_version(conn, name)
        row = await version_row(conn, name, version)
        if row is not None and row["status"] not in ("building", "failed"):
            # A built version (live, previous, ready, retired) is never rebuilt under other code:
            # that would silently change what a rollback returns to.
            check_code(projection, row)
        if live == version:
            raise RebuildRefused(
                f"projection {name!r} v{version} is already live; a rebuild needs a new version "
                f"(bump {name}'s VERSION) so the live one keeps serving while it builds"
            )
        await conn.execute(
            "INSERT INTO projection_versions (projection, version, code_hash, status) VALUES ($1, $2, $3, 'building')"
            " ON CONFLICT (projection, version) DO UPDATE SET code_hash = excluded.code_hash,"
            " status = 'building', report = NULL, updated_at = clock_timestamp()",
            name,
            version,
            projection.code_hash,
        )
        return live


async def swap(conn: asyncpg.Connection, projection: Projection, version: int) -> int | None:
    """Make `version` live and the live one `previous`, views included, in one transaction."""
    name = projection.name
    async with conn.transaction():
        await lock_registry(conn, name)
        old = await live_version(conn, name)
        await conn.execute(
            "UPDATE projection_versions SET status = 'retired', updated_at = clock_timestamp()"
            " WHERE projection = $1 AND status = 'previous'",
            name,
        )
        if old is not None:
            await set_status(conn, name, old, "previous")
        await set_status(conn, name, version, "live")
        await point_views(conn, projection, version)
        return old


@dataclass(frozen=True, slots=True)
class Rollback:
    projection: str
    from_version: int
    to_version: int
    #: Events the version now live has not applied yet, and whether a runner of it is active
    #: (only that runner can catch it up: the deployed code may be another version's).
    lag_events: int
    runner_active: bool


class StaleRollback(ProjectionError):
    """The previous version is behind the log and nothing would catch it up."""


async def rollback(conn: asyncpg.Connection, projection: Projection, *, force: bool = False) -> Rollback:
    """Swap back to the previous version (which becomes live; the rolled-back one `previous`).

    Since the swap, the previous version was only kept up to date if a runner of its own code
    ran. Without one it is as old as the swap and stays so, and readers would get that state
    silently: refused unless `force`, with what to do instead (deploy the previous version's
    code, whose runner catches it up while the current version keeps serving, then roll back).
    """
    name = projection.name
    async with conn.transaction():
        await lock_registry(conn, name)
        live = await live_version(conn, name)
        previous: int | None = await conn.fetchval(
            "SELECT version FROM projection_versions WHERE projection = $1 AND status = 'previous'", name
        )
        if live is None or previous is None:
            raise ProjectionError(f"projection {name!r} has no previous version to roll back to")
        if not await tables.tables_exist(conn, projection, previous):
            raise ProjectionError(f"the tables of {name!r} v{previous} are gone; nothing to roll back to")
        lag = await _lag(conn, projection, previous)
        active = await runner_active(conn, projection, previous)
        if lag and not active and not force:
            raise StaleRollback(
                f"{name!r} v{previous} is {lag:,} events behind the log and no runner of v{previous} is"
                f" running, so it would stay behind: deploy v{previous}'s code (its runner catches it up"
                f" while v{live} keeps serving), then roll back; or roll back with --force to serve it"
                " as it is"
            )
        await set_status(conn, name, live, "previous")
        await set_status(conn, name, previous, "live")
        await point_views(conn, projection, previous)
        return Rollback(name, live, previous, lag, active)


async def _lag(conn: asyncpg.Connection, projection: Projection, version: int) -> int:
    checkpoint = await load_checkpoint(conn, projection.checkpoint_name(version))
    return await reads.events_after(conn, checkpoint or START)


async def runner_active(conn: asyncpg.Connection, projection: Projection, version: int) -> bool:
    """Whether a runner of `version` holds its lock now (its connection's label says so)."""
    active: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = $1)",
        application_name(projection, "active", version),
    )
    return active


def application_name(projection: Projection, role: str, version: int | None = None) -> str:
    """Connection label that `status` reads from pg_stat_activity: active, standby or rebuilding."""
    return f"ledger-projection:{projection.name}:v{projection.version if version is None else version}:{role}"

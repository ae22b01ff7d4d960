"""What `ledger projections status` shows: per projection and version, checkpoint, lag, state and
the number of quarantined orders.

The state comes from the connections themselves (runners label theirs through
`application_name`, see `registry.application_name`), so it is true even when a process died
without cleaning up: a dead runner's connection is gone, and so is its "running".
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ledger.store import reads
from ledger.store.store import load_checkpoint
from projections import quarantine, registry
from projections.definition import Projection


@dataclass(frozen=True, slots=True)
class VersionStatus:
    projection: str
    version: int
    status: str  # registry status: live, previous, building, failed...
    checkpoint: tuple[int, int] | None
    lag_events: int | None
    state: str  # running, standby, rebuilding, stopped
    standbys: int
    code_matches: bool
    #: Orders this version could not apply (`projections.quarantine`): their rows are stale.
    quarantined: int = 0


async def projection_status(
    db: asyncpg.Pool | asyncpg.Connection, projection: Projection
) -> list[VersionStatus]:
    """One line per recorded version of a projection (this deploy's version included if new)."""
    rows = await registry.versions(db, projection.name)
    labels = await db.fetch(
        "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name LIKE $1",
        f"ledger-projection:{projection.name}:v%",
    )
    roles: dict[int, list[str]] = {}
    for label in labels:
        _, _, tag, role = str(label["application_name"]).split(":")
        roles.setdefault(int(tag[1:]), []).append(role)
    out: list[VersionStatus] = []
    recorded = {r["version"]: r for r in rows}
    for version in sorted(set(recorded) | {projection.version}):
        row = recorded.get(version)
        checkpoint = await load_checkpoint(db, projection.checkpoint_name(version))
        lag = None if checkpoint is None else await reads.events_after(db, checkpoint)
        version_roles = roles.get(version, [])
        state = (
            "rebuilding"
            if "rebuilding" in version_roles
            else "running"
            if "active" in version_roles
            else "standby"
            if "standby" in version_roles
            else "stopped"
        )
        matches = True
        if version == projection.version and row is not None:
            matches = row["code_hash"] == projection.code_hash
        out.append(
            VersionStatus(
                projection=projection.name,
                version=version,
                status="not built" if row is None else str(row["status"]),
                checkpoint=None if checkpoint is None else (checkpoint.tx, checkpoint.position),
                lag_events=lag,
                state=state,
                standbys=version_roles.count("standby"),
                code_matches=matches,
                quarantined=await quarantine.count(db, projection.name, version),
            )
        )
    return out

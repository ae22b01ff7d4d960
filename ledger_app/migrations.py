"""The packages that own SQL migrations, and the one list `ledger migrate` applies.

Each package keeps its schema beside its code (docs/architecture.md#migrations): the write side
in `ledger/store/migrations/` (store 0001-0019, API tokens 0020-0029, relay and intake
0030-0039), the read models in `projections/migrations/` (0040-0059), the fan-out in
`consumers/migrations/` (0060-0079). The runner (`ledger.store.migrate`) collects every file of
the folders it is given in version order; the composition root is the one place that names
them all, because the write side may not import the packages above it.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable

from ledger.store.migrate import migrate
from ledger.store.records import Connection

#: Owning package -> the versions its files may use (inclusive), in the order of the ranges.
MIGRATION_OWNERS: dict[str, tuple[int, int]] = {
    "ledger.store": (1, 39),
    "projections": (40, 59),
    "consumers": (60, 79),
}


def migration_sources() -> list[Traversable]:
    """Every owning package's `migrations/` folder."""
    return [resources.files(package) / "migrations" for package in MIGRATION_OWNERS]


async def migrate_all(dsn_or_conn: str | Connection) -> list[str]:
    """Apply every package's pending migrations (what `ledger migrate` does before the read models)."""
    return await migrate(dsn_or_conn, migration_sources())

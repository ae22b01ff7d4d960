"""Each package owns its migrations, each within its number range (docs/CONTRACTS.md#migrations)."""

from __future__ import annotations

from importlib import resources

from ledger.store.migrate import load_migrations
from ledger_app.migrations import MIGRATION_OWNERS, migration_sources


def test_every_packages_migrations_lie_in_its_own_number_range() -> None:
    for package, (low, high) in MIGRATION_OWNERS.items():
        versions = [m.version for m in load_migrations([resources.files(package) / "migrations"])]
        assert versions, f"{package} owns no migration"
        assert all(low <= v <= high for v in versions), (package, versions)


def test_the_collected_list_is_every_packages_files_in_version_order() -> None:
    collected = load_migrations(migration_sources())
    per_package = [load_migrations([source]) for source in migration_sources()]
    assert len(collected) == sum(len(files) for files in per_package)
    assert [m.version for m in collected] == sorted(m.version for files in per_package for m in files)
    assert collected[0].name == "events"

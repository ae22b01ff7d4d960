"""Install this deploy's projection versions right after the migrations (`ledger migrate`).

The list routes read views that exist only once a projection version is installed, so a fresh
database must not wait for the first runner. A version that needs a rebuild is reported, not
fatal (the live version keeps serving); changed code under an unchanged version is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from ledger_kernel.observability.logs import get_logger
from projections import catalog, registry
from projections.db import connection
from projections.definition import Projection
from projections.rebuild import RebuildReport, rebuild

_log = get_logger(__name__)


async def install_projections(dsn: str) -> dict[str, str]:
    """Install each catalogued projection; returns its status or `refused: <why>` / `needs rebuild: <why>`."""
    conn = await asyncpg.connect(dsn)
    statuses: dict[str, str] = {}
    try:
        for name, projection in catalog.PROJECTIONS.items():
            try:
                statuses[name] = await registry.install(conn, projection)
            except registry.NotBuilt as exc:
                statuses[name] = f"needs rebuild: {exc}"
            except registry.CodeChanged as exc:
                statuses[name] = f"refused: {exc}"
    finally:
        await conn.close()
    return statuses


async def build_missing(
    pool: asyncpg.Pool,
    projections: Iterable[Projection],
    *,
    dsn: str,
    workers: int,
    page_size: int,
    batch_size: int,
) -> list[RebuildReport]:
    """Rebuild (verify and swap) each projection whose deployed version is not built yet.

    For the dev stack after an upgrade that bumped a projection's version. A production deploy
    leaves this to an operator (`ledger projections rebuild NAME`: it reads the whole log), so
    a runner refuses to start instead.
    """
    reports = []
    for projection in projections:
        async with connection(pool) as conn:
            try:
                await registry.install(conn, projection)
                continue
            except registry.NotBuilt:
                pass
        try:
            report = await rebuild(
                pool, projection, dsn=dsn, workers=workers, page_size=page_size, batch_size=batch_size
            )
        except registry.RebuildLocked:
            # Another instance started with --build-missing is building it: this one's runner
            # waits for that build as a standby instead of failing the deploy.
            _log.info(
                "projection being built elsewhere", projection=projection.name, version=projection.version
            )
            continue
        reports.append(report)
    return reports

"""Install this deploy's projection versions right after the migrations (`ledger migrate`).

The list routes read views that exist only once a projection version is installed, so a fresh
database must not wait for the first runner. A version that needs a rebuild is reported, not
fatal (the live version keeps serving); changed code under an unchanged version is refused.
"""

from __future__ import annotations

import asyncpg

from projections import catalog, registry


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

"""Which product categories a destination already has, so each is created once (Omnisend).

Why Postgres and a process cache: the mapper is pure and synchronous, so it filters by the
in-memory set; the set is loaded once per process and every category created is written back,
so a restart or a second worker does not create them again. Two workers racing to create the
same new category both succeed (the create falls back to a PUT, as Omnisend's plugin does).
"""

from __future__ import annotations

import asyncpg

__all__ = ["CategoryBook"]


class CategoryBook:
    """The categories one destination has; `pool=None` keeps it in memory only (tests, tools)."""

    def __init__(self, pool: asyncpg.Pool | None, destination: str) -> None:
        self._pool = pool
        self._destination = destination
        self.known: set[str] = set()
        self._loaded = pool is None

    async def has(self, category_id: str) -> bool:
        """True when the category was created before (by any process)."""
        if not self._loaded and self._pool is not None:
            rows = await self._pool.fetch(
                "SELECT category_id FROM fanout_categories WHERE destination = $1", self._destination
            )
            self.known.update(r["category_id"] for r in rows)
            self._loaded = True
        return category_id in self.known

    async def remember(self, category_id: str, title: str) -> None:
        """Record a category the destination now has."""
        self.known.add(category_id)
        if self._pool is not None:
            await self._pool.execute(
                "INSERT INTO fanout_categories (destination, category_id, title) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                self._destination,
                category_id,
                title,
            )

"""Connections typed as `asyncpg.Connection`, which the store's helpers expect.

A pool hands out `PoolConnectionProxy` objects that forward everything to the connection; the
stubs type them apart, so this is the one place where the two are reconciled.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import cast

import asyncpg


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """`pool.acquire()`, typed as a plain connection."""
    async with pool.acquire() as proxy:
        yield cast(asyncpg.Connection, proxy)

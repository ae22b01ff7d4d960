"""The projections' connection to PostgreSQL, waited for while the server is unreachable.

A runner is a long-running process: a database that is starting (`CannotConnectNowError`,
"the database system is starting up"), restarting or not listening yet (connection refused)
is a reason to wait, not to exit, as the relay and the fan-out workers do. Exiting would leave
the read models to whatever restarts the process (in `ledger dev`, a restart every 2 s with a
traceback each time). Retries back off exponentially (stamina) and log one structured line per
attempt (stamina's `stamina.retry_scheduled`, naming `wait_for_database` and the error). A
refused login or a malformed URL is not retried: waiting would not fix it.
"""

from __future__ import annotations

import asyncpg
import stamina

from ledger.store.pool import create_pool
from ledger_kernel.settings import StoreSettings

#: What an unreachable or starting server raises (TimeoutError is an OSError).
UNREACHABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.PostgresConnectionError,
)


async def open_pool(
    dsn: str,
    settings: StoreSettings,
    *,
    application_name: str,
    wait_initial_s: float = 0.1,
    wait_max_s: float = 5.0,
) -> asyncpg.Pool:
    """A store pool, waiting (with back-off, for as long as it takes) until the server answers."""

    # A function of its own, without arguments: stamina's log line names it, and never shows
    # the URL (which may carry a password).
    @stamina.retry(
        on=UNREACHABLE, attempts=None, timeout=None, wait_initial=wait_initial_s, wait_max=wait_max_s
    )
    async def wait_for_database() -> asyncpg.Pool:
        return await create_pool(dsn, settings, application_name=application_name)

    return await wait_for_database()

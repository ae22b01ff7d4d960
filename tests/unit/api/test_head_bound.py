"""The HTTP server's own bound on request heads (`BoundedHttpToolsProtocol`).

httptools has no head limit: without this bound a header of any size would be gathered in
memory. Past `SERVER_HEAD_LIMIT_BYTES` the server answers a bare 400 and stops parsing; a head
within it, and a body of any size after a complete head, go through.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from ledger.api.headers import SERVER_HEAD_LIMIT_BYTES, BoundedHttpToolsProtocol, server_options

CHUNK = 64 * 1024


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = str(len(body)).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]}
    )
    await send({"type": "http.response.body", "body": answer})


def _connection() -> tuple[BoundedHttpToolsProtocol, FakeTransport]:
    config = uvicorn.Config(_app, lifespan="off", **server_options())
    config.load()
    protocol = BoundedHttpToolsProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def test_the_api_server_uses_the_bounded_httptools_protocol() -> None:
    assert server_options()["http"] is BoundedHttpToolsProtocol


async def test_a_head_past_the_server_limit_gets_400_and_nothing_more_is_parsed() -> None:
    protocol, transport = _connection()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: ledger\r\nX-Filler: ")
    fed = 0
    while not transport.closed and fed < 2 * SERVER_HEAD_LIMIT_BYTES:
        protocol.data_received(b"x" * CHUNK)
        fed += CHUNK

    assert transport.closed
    assert transport.written.startswith(b"HTTP/1.1 400")
    assert fed <= SERVER_HEAD_LIMIT_BYTES + CHUNK
    protocol.data_received(b"x" * CHUNK)  # what still arrives is dropped, not parsed
    assert transport.written.count(b"HTTP/1.1") == 1


async def test_a_large_body_after_a_small_head_and_a_second_request_are_served() -> None:
    protocol, transport = _connection()
    size = SERVER_HEAD_LIMIT_BYTES + 3 * CHUNK  # the body does not count against the head bound
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: ledger\r\nContent-Length: %d\r\n\r\n" % size)
    for _ in range(size // CHUNK):
        protocol.data_received(b"y" * CHUNK)
    for _ in range(50):
        if transport.written:
            break
        await asyncio.sleep(0.01)
    assert transport.written == b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%d" % (len(str(size)), size)

    transport.written.clear()
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: ledger\r\n\r\n")
    for _ in range(50):
        if transport.written:
            break
        await asyncio.sleep(0.01)
    assert transport.written.startswith(b"HTTP/1.1 200")
    assert not transport.closed

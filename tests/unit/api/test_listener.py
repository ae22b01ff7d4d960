"""The multi-worker API's listener gives every accepted connection TCP_NODELAY."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from ledger_app.listener import tcp_listener


async def test_connections_accepted_on_the_multi_worker_listener_send_without_nagle_delay() -> None:
    config = uvicorn.Config("ledger_app.api:app_factory", factory=True, host="127.0.0.1", port=0, workers=2)
    listener = tcp_listener(config)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    try:
        host, port = listener.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(accepted, 10) == 1
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_uvicorns_own_listener_is_the_one_that_lacks_it() -> None:
    """Why the re-wrap exists: uvicorn's bound socket has protocol 0, which asyncio skips."""
    config = uvicorn.Config("ledger_app.api:app_factory", factory=True, host="127.0.0.1", port=0, workers=2)
    plain = config.bind_socket()
    try:
        assert plain.proto == 0
    finally:
        plain.close()

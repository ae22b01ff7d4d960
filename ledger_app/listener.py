"""The multi-worker API's listening socket, made so that its connections send without delay.

uvicorn's supervisor binds `socket.socket(family)`, whose protocol number is 0. Accepted
connections inherit that number, and asyncio only sets `TCP_NODELAY` on sockets whose protocol is
`IPPROTO_TCP`; so every response (head and body written separately by uvicorn, with h11 as with
httptools) met Nagle's algorithm and the client's delayed ACK: about 40 ms per request, whatever
the load (docs/performance.md#nagle).
A single-worker API binds through `loop.create_server` and never had the delay.
"""

from __future__ import annotations

import socket

import uvicorn


def tcp_listener(config: uvicorn.Config) -> socket.socket:
    """`config.bind_socket()`, re-wrapped as an `IPPROTO_TCP` socket when it is TCP."""
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        sock.set_inheritable(True)
    return sock

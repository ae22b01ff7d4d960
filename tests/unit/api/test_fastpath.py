"""`PlaceOrderFastPath`: POST /api/v3/orders skips FastAPI's routing, not its contract.

The same requests get the same answers (status, problem+json bytes, headers) with the fast
path as through the router, and only that method on that path takes it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from ledger.api import orders
from ledger.api.fastpath import PlaceOrderFastPath
from tests.unit.api.inmemory import MemoryApi, memory_api, order_body

AUTH = MemoryApi.auth()
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: (headers, body) of requests that each exercise one rule of POST /orders.
CASES: list[tuple[dict[str, str], bytes]] = [
    ({}, order_body()),  # no token: 401
    (MemoryApi.auth("lgr_unknown"), order_body()),  # unknown token: 401
    (MemoryApi.auth("lgr_reader-only"), order_body()),  # no orders:write: 403
    (AUTH, b'{"total": '),  # malformed: 400
    (AUTH, b""),  # no body: 400
    ({**AUTH, "Content-Type": "text/plain"}, order_body()),  # 415
    (AUTH, b'{"x": "' + b"y" * 5000 + b'"}'),  # over max_body_bytes: 413
    (AUTH, b'{"total": 1, "items": []}'),  # schema: 422
    (AUTH, b"[1, 2]"),  # not an object: 422
    ({**AUTH, "Idempotency-Key": "short"}, order_body()),  # malformed key: 400
    ({**AUTH, "If-Match": 'W/"1"'}, order_body()),  # weak ETag: 400
    (AUTH, order_body("CART-1")),  # placed: 201
    (AUTH, order_body("CART-1")),  # the same external id again: 409
]


@asynccontextmanager
async def fast_api() -> AsyncIterator[MemoryApi]:
    """The app as built: POST /orders takes the fast path."""
    async with memory_api(max_body_bytes=4096) as api:
        yield api


@asynccontextmanager
async def routed_api() -> AsyncIterator[MemoryApi]:
    """The app without its fast path: every request goes through FastAPI's router."""
    async with memory_api(max_body_bytes=4096) as api:
        kept = [m for m in api.app.user_middleware if m.cls is not PlaceOrderFastPath]  # type: ignore[comparison-overlap]
        assert len(kept) == len(api.app.user_middleware) - 1
        api.app.user_middleware = kept
        api.app.middleware_stack = None  # rebuilt on the next request, without the fast path
        yield api


def _comparable(response: httpx.Response) -> tuple[Any, ...]:
    """What must match: status, content type, the problem's bytes (but the orders' ids)."""
    content = UUID_RE.sub(b"<id>", response.content) if response.status_code >= 400 else b""
    names = sorted(k for k in response.headers if k not in ("date", "content-length", "etag", "location"))
    return (response.status_code, response.headers.get("content-type"), content, names)


async def test_every_place_order_rule_answers_the_same_with_the_fast_path_as_through_the_router() -> None:
    answers: list[list[tuple[Any, ...]]] = []
    for make in (fast_api, routed_api):
        async with make() as api:
            seen = []
            for headers, content in CASES:
                response = await api.client.post("/api/v3/orders", content=content, headers=headers)
                seen.append(_comparable(response))
            answers.append(seen)
    fast, routed = answers
    assert [a[0] for a in fast] == [401, 401, 403, 400, 400, 415, 413, 422, 422, 400, 400, 201, 409]
    assert fast == routed


async def test_only_the_routes_method_on_its_exact_path_takes_the_fast_path() -> None:
    taken: list[str] = []
    passed: list[str] = []

    async def endpoint(request: Request) -> Response:
        taken.append(f"{request.method} {request.url.path}")
        return Response(b"fast")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        passed.append(f"{scope['method']} {scope['path']}")
        await Response(b"routed")(scope, receive, send)

    fast_path = PlaceOrderFastPath(app, endpoint, orders.place_order_route())

    async def as_mounted(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = FastAPI()  # what Starlette sets before any middleware runs
        await fast_path(scope, receive, send)

    transport = httpx.ASGITransport(app=as_mounted)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
        await client.post("/api/v3/orders", content=b"{}")
        await client.get("/api/v3/orders")
        await client.post("/api/v3/orders/")
        await client.post("/api/v3/orders/x/cancel")
    assert taken == ["POST /api/v3/orders"]
    assert passed == ["GET /api/v3/orders", "POST /api/v3/orders/", "POST /api/v3/orders/x/cancel"]

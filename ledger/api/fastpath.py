"""Place-order, the hot route, served without FastAPI's routing and dependency solving.

Profiled under load (docs/performance.md#api), the framework between the middlewares and the
route's code (route matching over every route, two exception-handling wrappers, an exit-stack
middleware, dependency solving for the one `orders:write` dependency) cost about as much CPU
as the handler's own Python. `PlaceOrderFastPath` sits innermost among the middlewares (inside
the request deadline, the head guard and the metrics) and hands `POST /api/v3/orders` straight
to the same handler code, with the same dependency (`require`), the same exception handlers
(the app's, looked up as Starlette does) and the same `route` in the scope (metrics labels).
Every other request, and that route under any other method or path, goes the usual way; the
FastAPI route stays registered for the OpenAPI document and as that way.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class PlaceOrderFastPath:
    """Serve `route` (one method, a path without parameters) with `endpoint(request)`; pass
    everything else on to `app`."""

    def __init__(self, app: ASGIApp, endpoint: Endpoint, route: APIRoute) -> None:
        methods = sorted(route.methods or ())
        if len(methods) != 1 or route.param_convertors:
            raise ValueError("the fast path serves one method on a path without parameters")
        self.app = app
        self.endpoint = endpoint
        self.route = route
        self.method = methods[0]
        self.path = route.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != self.method
            or scope["path"] != self.path
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        app: FastAPI = scope["app"]
        scope["route"] = self.route
        request = Request(scope, receive, send)
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            response = await self.endpoint(request)
            await response(scope, receive, sender)
        except Exception as exc:
            handler = _handler_for(app, exc)
            if handler is None or started:
                raise
            answer = handler(request, exc)
            await (await answer if inspect.isawaitable(answer) else answer)(scope, receive, send)


def _handler_for(app: FastAPI, exc: Exception) -> Callable[[Request, Exception], Any] | None:
    """The app's handler for `exc`, looked up as Starlette's ExceptionMiddleware does (a
    handler for `Exception` or 500 belongs to the outermost middleware: not here either)."""
    handlers = app.exception_handlers
    if isinstance(exc, HTTPException) and exc.status_code != 500 and exc.status_code in handlers:
        return handlers[exc.status_code]
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None

"""The ASGI shell shared by both sandboxes: request pipeline, control endpoints, serving.

Serving (uvicorn) lives in `serving.py`. Pipeline for a vendor path: fault injection -> auth -> rate limit -> body checks -> route,
then the exchange is logged (headers redacted). `/_sandbox/*` is the control surface and is
neither authenticated, rate limited nor logged, so tests can always inspect and steer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from consumers.sandbox.core import (
    Clock,
    Fault,
    FaultSet,
    FaultSpecError,
    RateDecision,
    RequestLog,
    SlidingWindowLimiter,
    SystemClock,
    redact_headers,
)


@dataclass
class SandboxConfig:
    """Settings common to both sandboxes; `faults` use the `POST /_sandbox/faults` JSON form."""

    token: str = "sandbox-token"  # noqa: S105 - a local fake, not a credential
    rate_limit_per_minute: int | None = None
    rate_window_s: float = 60.0
    clock: Clock = field(default_factory=SystemClock)
    faults: list[dict[str, Any]] = field(default_factory=list)
    max_body_bytes: int = 10 * 1024 * 1024
    max_logged_requests: int = 50_000


@dataclass(slots=True)
class Call:
    """One parsed vendor request handed to a route handler."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any


@dataclass(slots=True)
class Reply:
    """A vendor answer; `raw`/`stream_bytes` replace the JSON body for garbage/huge-body faults."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    stream_bytes: int | None = None


Handler = Callable[[Call], Reply]
Route = tuple[str, "re.Pattern[str]", Handler]


def route(method: str, pattern: str, handler: Handler) -> Route:
    """`{name}` segments in `pattern` become path parameters."""
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
    return (method, re.compile(f"^{regex}$"), handler)


def now_iso(clock: Clock) -> str:
    return datetime.fromtimestamp(clock.time(), UTC).isoformat().replace("+00:00", "Z")


class SandboxApp(ABC):
    """Base ASGI app; a vendor subclass supplies routes, auth, error shapes and state."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.log = RequestLog(config.max_logged_requests)
        self.faults = FaultSet(config.clock)
        self.limiter = (
            SlidingWindowLimiter(config.rate_limit_per_minute, config.rate_window_s, config.clock)
            if config.rate_limit_per_minute
            else None
        )
        self.lock = threading.RLock()
        self._release: asyncio.Event | None = None
        self._routes = self.routes()
        for spec in config.faults:
            self.faults.add(spec)

    # -- vendor hooks -------------------------------------------------------------------------
    @abstractmethod
    def routes(self) -> list[Route]: ...

    @abstractmethod
    def is_vendor_path(self, path: str) -> bool: ...

    @abstractmethod
    def authenticated(self, headers: Mapping[str, str]) -> bool: ...

    @abstractmethod
    def error(self, status: int, message: str, fields: Mapping[str, list[str]] | None = None) -> Reply: ...

    @abstractmethod
    def rate_headers(self, decision: RateDecision) -> dict[str, str]: ...

    @abstractmethod
    def order_keys(self, call: Call) -> set[str]: ...

    @abstractmethod
    def snapshot(self) -> dict[str, Any]: ...

    @abstractmethod
    def clear_records(self) -> None: ...

    def unauthorized(self) -> Reply:
        return self.error(401, "Unauthenticated.")

    def rate_limited(self, decision: RateDecision) -> Reply:
        reply = self.error(429, "Too Many Requests")
        reply.headers.update(self.rate_headers(decision))
        return reply

    # -- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = request.url.path
        response: Response | None
        if path.startswith("/_sandbox/"):
            response = await self._control(request)
        elif self.is_vendor_path(path):
            response = await self._vendor(request)
        else:
            response = _json_response(404, {"message": "Not Found"})
        if response is None:  # reset_connection fault: start a response and never finish it
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]}
            )
            await send({"type": "http.response.body", "body": b'{"partial', "more_body": True})
            return
        await response(scope, receive, send)

    async def _vendor(self, request: Request) -> Response | None:
        method, path = request.method, request.url.path
        raw = await _read_limited(request, self.config.max_body_bytes)
        body, bad_json = _parse_json(raw)
        call = Call(method, path, {}, dict(request.query_params), request.headers, body)
        received = now_iso(self.clock)
        fault = self.faults.match(method, path, self.order_keys(call))
        reply: Reply | None = None
        if fault is not None and fault.kind == "hang":
            await self._hang(fault.hang_seconds)
        elif fault is not None and fault.kind == "reset_connection":
            self._log(call, received, 0, fault)
            return None
        elif fault is not None:
            reply = self._fault_reply(fault)
        if reply is None and not self.authenticated(request.headers):
            reply = self.unauthorized()
        decision = self.limiter.acquire() if reply is None and self.limiter else None
        if decision is not None and not decision.allowed:
            reply = self.rate_limited(decision)
        if reply is None:
            if raw is None:
                reply = self.error(413, "Request Entity Too Large")
            elif bad_json:
                reply = self.error(400, "Bad Request - body is not valid JSON")
            else:
                reply = self._dispatch(call)
        if decision is not None:
            reply.headers.update(self.rate_headers(decision))
        self._log(call, received, reply.status, fault)
        return _to_response(reply)

    def _dispatch(self, call: Call) -> Reply:
        allowed: list[str] = []
        for method, regex, handler in self._routes:
            match = regex.match(call.path)
            if match is None:
                continue
            if method != call.method:
                allowed.append(method)
                continue
            call.params = match.groupdict()
            with self.lock:
                return handler(call)
        if allowed:
            return self.error(405, f"The {call.method} method is not supported for this route.")
        return self.error(404, "Not Found")

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.kind == "rate_limit_storm":
            decision = RateDecision(False, self.config.rate_limit_per_minute or 0, 0, fault.reset_seconds)
            reply = self.rate_limited(decision)
            reply.status = fault.status
            return reply
        if fault.kind == "reject_order":
            return self.error(fault.status, f"Order {fault.order_id} is rejected", {"order": ["rejected"]})
        if fault.body is not None or fault.body_bytes is not None:
            return Reply(fault.status, raw=(fault.body or "").encode(), stream_bytes=fault.body_bytes)
        reply = self.error(fault.status, "Injected fault")
        if fault.retry_after is not None:
            reply.headers["Retry-After"] = fault.retry_after
        return reply

    async def _hang(self, seconds: float) -> None:
        if self._release is None:
            self._release = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), seconds)

    def release_hangs(self) -> None:
        """Wake every hanging request (on fault clear and shutdown)."""
        if self._release is not None:
            self._release.set()
            self._release = None

    def _log(self, call: Call, received: str, status: int, fault: Fault | None) -> None:
        self.log.append(
            {
                "method": call.method,
                "path": call.path,
                "query": dict(call.query),
                "headers": redact_headers(call.headers),
                "body": call.body,
                "status": status,
                "time": received,
                "fault": None if fault is None else fault.kind,
            }
        )

    # -- control surface ------------------------------------------------------------------------
    async def _control(self, request: Request) -> Response:
        name, method = request.url.path.removeprefix("/_sandbox/").strip("/"), request.method
        if (name, method) == ("requests", "GET"):
            since = request.query_params.get("since", "0")
            if not since.isdigit():
                return _json_response(400, {"error": "since must be a non-negative integer"})
            return _json_response(200, {"requests": self.log.since(int(since)), "next": self.log.next_index})
        if (name, method) == ("state", "GET"):
            with self.lock:
                return _json_response(200, self.snapshot())
        if (name, method) == ("reset", "POST"):
            self.reset()
            return _json_response(200, {"reset": True})
        if name == "faults":
            return await self._control_faults(request)
        if (name, method) == ("health", "GET"):
            return _json_response(200, {"ok": True})
        return _json_response(404, {"error": f"unknown control endpoint {method} {request.url.path}"})

    async def _control_faults(self, request: Request) -> Response:
        if request.method == "GET":
            return _json_response(200, {"faults": self.faults.list()})
        if request.method == "DELETE":
            self.faults.clear()
            self.release_hangs()
            return Response(status_code=204)
        if request.method != "POST":
            return _json_response(405, {"error": "use GET, POST or DELETE"})
        body, bad = _parse_json(await _read_limited(request, 1024 * 1024))
        specs = body if isinstance(body, list) else [body]
        if bad or not all(isinstance(s, dict) for s in specs):
            return _json_response(400, {"error": "a fault is a JSON object (or a list of them)"})
        try:
            added = [self.faults.add(spec).to_json() for spec in specs]
        except FaultSpecError as exc:
            return _json_response(400, {"error": str(exc)})
        return _json_response(201, {"faults": added})

    def reset(self) -> None:
        """Forget records, the request log, faults and the rate window."""
        with self.lock:
            self.clear_records()
        self.log.clear()
        self.faults.clear()
        self.release_hangs()
        if self.limiter:
            self.limiter.reset()


async def _read_limited(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes | None) -> tuple[Any, bool]:
    if not raw or not raw.strip():
        return None, False
    try:
        return json.loads(raw), False
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, True


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    if status == 204 or body is None:
        return Response(status_code=status, headers=dict(headers or {}))
    return Response(
        json.dumps(body), status_code=status, headers=dict(headers or {}), media_type="application/json"
    )


def _to_response(reply: Reply) -> Response:
    if reply.stream_bytes is not None:
        return StreamingResponse(
            _filler(reply.stream_bytes),
            status_code=reply.status,
            headers=reply.headers,
            media_type="application/json",
        )
    if reply.raw is not None:
        return Response(
            reply.raw, status_code=reply.status, headers=reply.headers, media_type="application/json"
        )
    return _json_response(reply.status, reply.body, reply.headers)


async def _filler(total: int) -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    sent = 0
    while sent < total:
        piece = chunk[: total - sent]
        sent += len(piece)
        yield piece

"""Composition root of the HTTP API: `create_app(settings)` wires pool, store, service, auth.

Every error leaves as RFC 9457 problem+json: our own `Problem`s, FastAPI's parameter errors
(422), routing errors (404/405), domain errors (422/404/409/410), service refusals (409/422),
database outages (503 with Retry-After) and, as a last resort, a 500 that names no internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, start_http_server
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger.api import audit, orders, subjects
from ledger.api.auth import Authenticator, TokenStore
from ledger.api.deadline import RequestDeadline
from ledger.api.deps import BODY_MODELS, AppState, StaleReadModels, state_of
from ledger.api.fastpath import PlaceOrderFastPath
from ledger.api.headers import HeaderGuard
from ledger.api.openapi import add_links, cap_line_counts, document_order_ids, document_problems
from ledger.api.problems import PROBLEM_MEDIA_TYPE, Problem, field_errors, loggable_path
from ledger.api.schemas import problem_responses
from ledger.domain.errors import DomainError
from ledger.domain.events import EVENT_TYPES, UPCASTERS
from ledger.privacy.erasure import PrivacyService, ReportPlace
from ledger.privacy.fields import sealed_growth
from ledger.privacy.setup import pg_codec
from ledger.service import (
    DuplicateExternalId,
    IdempotencyInProgress,
    IdempotencyMismatch,
    OrderGone,
    OrderNotFound,
    OrderService,
    OrderTooLarge,
    ServiceError,
    VersionConflict,
)
from ledger.store import (
    EventRegistry,
    EventStore,
    EventStoreProtocol,
    InvalidInput,
    StoreError,
    create_pool,
    pending_migrations,
)
from ledger.store.migrate import MigrationSources
from ledger_kernel.observability import get_logger
from ledger_kernel.observability.metrics import Metrics, multiprocess_mode, worker_stopped
from ledger_kernel.settings import Settings
from ledger_kernel.wire.codec import dumps

log = get_logger(__name__)

_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
_DOMAIN_STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "gone": 410}


def event_registry() -> EventRegistry:
    """The domain's events and upcasters as a store registry."""
    registry = EventRegistry()
    for name, model in EVENT_TYPES.items():
        registry.register(model, name)
    for (name, version), fn in UPCASTERS.items():
        registry.register_upcaster(name, version, fn)
    return registry


def problem_response(problem: Problem, request: Request | None = None) -> Response:
    """Render a `Problem` as application/problem+json."""
    instance = request.url.path if request is not None else None
    return Response(
        dumps(problem.to_dict(instance)),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def to_problem(exc: Exception) -> Problem | None:
    """The problem for a known exception, or None (the caller then answers 500)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, DomainError):
        errors = [{"loc": ["body", *e.loc], "msg": e.msg, "type": e.code} for e in exc.field_errors]
        status = _DOMAIN_STATUS.get(exc.kind, 422)
        slug = {404: "not-found", 409: "version-conflict", 410: "gone"}.get(status, "domain-rule")
        extra: dict[str, Any] = {"code": exc.code}
        if errors:
            extra["errors"] = errors
        return Problem(status, slug, exc.reason, **extra)
    if isinstance(exc, VersionConflict):
        return Problem(
            409,
            "version-conflict",
            str(exc),
            current_version=exc.current_version,
            headers={"ETag": f'"{exc.current_version}"'},
        )
    if isinstance(exc, OrderNotFound):
        return Problem(404, "not-found", str(exc))
    if isinstance(exc, OrderGone):
        return Problem(410, "gone", str(exc), version=exc.version)
    if isinstance(exc, DuplicateExternalId):
        return Problem(
            409,
            "duplicate-external-id",
            str(exc),
            existing_order_id=exc.existing_order_id,
            headers={"Location": f"/api/v3/orders/{exc.existing_order_id}"},
        )
    if isinstance(exc, OrderTooLarge):
        return Problem(422, "order-too-large", str(exc), size=exc.size, max_bytes=exc.limit)
    if isinstance(exc, IdempotencyMismatch):
        return Problem(422, "idempotency-key-reused", str(exc))
    if isinstance(exc, IdempotencyInProgress):
        return Problem(409, "idempotency-in-progress", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, InvalidInput):
        return Problem(422, "validation-error", str(exc))
    if isinstance(exc, asyncpg.CharacterNotInRepertoireError | asyncpg.UntranslatableCharacterError):
        # e.g. a NUL in a query parameter: PostgreSQL text cannot hold it, so the input is invalid
        return Problem(
            422, "validation-error", "text contains a character that cannot be stored (such as NUL)"
        )
    if isinstance(exc, asyncpg.UndefinedTableError):
        return Problem(
            503,
            "read-model-unavailable",
            "the read models are not installed yet: run `ledger migrate`",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, _UNAVAILABLE):
        return Problem(
            503, "service-unavailable", "the database is unavailable", headers={"Retry-After": "2"}
        )
    return None


#: Methods counted under their own name; anything else a client sends is counted as `other`, so a
#: client cannot grow the `method` label without bound (one series per made-up method).
COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts requests by method, route template and status (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def wrapped(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope["method"] if scope["method"] in COUNTED_METHODS else "other"
            self.metrics.http_requests.labels(method, template, str(status)).inc()


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some operation serves at `path` (Starlette's 405 names only the first route's).

    Routes are one per method here, so a path's methods are spread over several routes; the
    OpenAPI document is where they meet (HEAD comes with GET, as Starlette serves it).
    """
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, operations in app.openapi().get("paths", {}).items():
            methods = [m.upper() for m in operations if m.upper() in _METHOD_ORDER]
            if "GET" in methods:
                methods.append("HEAD")
            table.append((compile_path(template)[0], sorted(methods, key=_METHOD_ORDER.index)))
        app.state.allow_table = table
    for regex, methods in table:
        if regex.match(path):
            return methods
    return []


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = field_errors(exc.errors(), prefix=())
        return problem_response(
            Problem(422, "validation-error", "invalid parameters", errors=errors), request
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed", 422: "validation-error"}.get(
            exc.status_code, "bad-request"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path)) or headers.get(
                "Allow", ""
            )
        return problem_response(Problem(exc.status_code, slug, str(exc.detail), headers=headers), request)

    async def _known(request: Request, exc: Exception) -> Response:
        problem = to_problem(exc)
        if problem is None:
            log.error("unhandled error", path=loggable_path(request.url.path), error=repr(exc))
            problem = Problem(500, "internal-error", "unexpected error; it was logged")
        elif problem.status == 503:
            log.warning("database unavailable", error=repr(exc))
        return problem_response(problem, request)

    # Specific classes go to Starlette's ExceptionMiddleware (answered, not re-raised); a truly
    # unexpected exception still reaches ServerErrorMiddleware and is logged as a bug.
    for cls in (
        DomainError,
        ServiceError,
        StoreError,
        OSError,
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ):
        app.add_exception_handler(cls, _known)


_OPEN: dict[str, Any] = {"security": []}  # the ops routes answer without a token (probes, scrapers)


def _ops_routes(app: FastAPI, settings: Settings, migrations: MigrationSources | None) -> None:
    @app.get("/healthz", include_in_schema=True, tags=["ops"], summary="Liveness", openapi_extra=_OPEN)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness: database reachable and migrated",
        openapi_extra=_OPEN,
        responses={503: {"description": "Not ready (database away or migrations pending)"}},
    )
    async def readyz(request: Request) -> Response:
        db = state_of(request).pool
        if db is None:  # an in-memory store (unit tests): nothing to migrate
            return Response(dumps({"status": "ok"}), media_type="application/json")
        try:
            async with db.acquire(timeout=2) as conn:
                pending = await pending_migrations(cast("asyncpg.Connection", conn), migrations)
        except Exception as exc:  # any failure means "not ready"
            body: dict[str, Any] = {"status": "unavailable", "reason": f"database: {type(exc).__name__}"}
            return Response(
                dumps(body), status_code=503, media_type="application/json", headers={"Retry-After": "2"}
            )
        if pending:
            body = {"status": "unavailable", "reason": "migrations pending", "pending": pending}
            return Response(dumps(body), status_code=503, media_type="application/json")
        return Response(dumps({"status": "ok"}), media_type="application/json")

    if settings.api.metrics_port is not None:
        return  # served on its own port by the lifespan (`_serve_metrics_port`), not here
    token = settings.api.metrics_token

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        openapi_extra={"security": [{"metrics": []}]} if token else _OPEN,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
            **(problem_responses(401) if token else {}),
        },
    )
    async def metrics(request: Request) -> Response:
        if token is not None:
            check_metrics_token(request, token.get_secret_value())
        state = state_of(request)
        await refresh_fence_lag(state.store, state.metrics)
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def check_metrics_token(request: Request, token: str) -> None:
    """401 unless the request carries `Authorization: Bearer <api.metrics_token>`."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise Problem(
            401,
            "unauthorized",
            "send Authorization: Bearer <metrics token>",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def refresh_fence_lag(store: EventStoreProtocol, metrics: Metrics) -> None:
    """Fence lag is read at scrape time: one cheap query, no background task."""
    try:
        fence = await store.fence_status()
        metrics.fence_lag_seconds.set(fence.oldest_writer_age_s or 0.0)
    except Exception as exc:  # a scrape must still answer while the database is away
        log.warning("fence status unavailable", error=repr(exc))


@asynccontextmanager
async def _serve_metrics_port(
    settings: Settings, store: EventStoreProtocol, metrics: Metrics
) -> AsyncIterator[None]:
    """Metrics on `api.metrics_port` (a port kept off the public network), fence lag kept fresh.

    prometheus_client's server runs in a thread and cannot await the fence query at scrape
    time, so a task refreshes the gauge every few seconds instead.
    """
    port = settings.api.metrics_port
    if port is None:
        yield
        return
    if multiprocess_mode():
        # One of several workers: `ledger api` serves every worker's values on the port itself;
        # each worker only keeps its share of the fence-lag gauge fresh.
        server, thread = None, None
    else:
        server, thread = start_http_server(port, addr=settings.api.host, registry=metrics.registry)

    async def refresh() -> None:
        while True:
            await refresh_fence_lag(store, metrics)
            await asyncio.sleep(5)

    task = asyncio.get_running_loop().create_task(refresh())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if server is not None and thread is not None:
            server.shutdown()
            server.server_close()
            thread.join(5)


def _custom_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in BODY_MODELS.items():
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for def_name, definition in body.pop("$defs", {}).items():
                components.setdefault(def_name, definition)
            components[name] = body
        schemes: dict[str, Any] = {"bearer": {"type": "http", "scheme": "bearer"}}
        if settings.api.metrics_token is not None:
            schemes["metrics"] = {"type": "http", "scheme": "bearer", "description": "api.metrics_token"}
        schema["components"]["securitySchemes"] = schemes
        schema["security"] = [{"bearer": []}]
        document_problems(schema)
        cap_line_counts(components, settings.api.max_lines)
        document_order_ids(schema)
        add_links(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _prune_idempotency_keys(store: EventStoreProtocol, settings: Settings) -> None:
    """Drop idempotency keys older than the TTL, now and then (any API instance may; it is idempotent).

    The TTL (`LEDGER_STORE__IDEMPOTENCY_TTL_HOURS`, 72 h) must outlast the longest retry policy
    of any producer: a retry after its key was pruned would be applied again.
    """
    while True:
        try:
            pruned = await store.prune_idempotency()
            if pruned:
                log.info("idempotency keys pruned", count=pruned)
        except Exception as exc:  # the database may be away; try again next round
            log.warning("idempotency pruning failed", error=repr(exc))
        await asyncio.sleep(settings.store.idempotency_prune_interval_s)


def create_app(
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    metrics: Metrics | None = None,
    service: OrderService | None = None,
    routers: Sequence[APIRouter] = (),
    stale_read_models: StaleReadModels | None = None,
    store: EventStoreProtocol | None = None,
    tokens: Authenticator | None = None,
    migrations: MigrationSources | None = None,
    privacy_places: Sequence[Callable[[asyncpg.Pool], ReportPlace]] = (),
) -> FastAPI:
    """The API app. Without `pool`, the lifespan creates one from `settings` (and closes it).

    With `store` (and `tokens`) and no `pool`, the app runs on that store alone, with no
    database: how the routes are unit-tested on `InMemoryEventStore`.

    `routers` are the read models' routes, mounted by the composition root (`ledger_app.api`):
    the write side does not import `projections`. `migrations` are the folders `/readyz` checks
    for pending files (the root passes every package's; without, the write side's own).
    """
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_pool = pool is None and store is None
        db = pool
        if own_pool:
            db = await create_pool(settings.database_url, settings.store, application_name="ledger-api")
        events: EventStoreProtocol
        privacy_service: PrivacyService | None = None
        if store is not None:
            events = store
        else:
            assert db is not None
            codec = pg_codec(db, settings.privacy)
            pg_events = EventStore(
                db, event_registry(), settings.store, observe=metrics.observe_append, codec=codec
            )
            if codec is not None:
                privacy_service = PrivacyService(
                    db,
                    pg_events,
                    codec,
                    codec.store,
                    intake_retention_hours=settings.privacy.kafka_retention_hours,
                    places=[make(db) for make in privacy_places],
                )
            events = pg_events
        if tokens is None and db is None:
            raise ValueError("create_app(store=...) without a pool needs tokens=")
        auth = tokens if tokens is not None else TokenStore(cast("asyncpg.Pool", db))
        svc = service or OrderService(
            events,
            max_message_bytes=settings.kafka.max_batch_size,
            sealed_growth=sealed_growth if getattr(events, "codec", None) is not None else None,
        )
        app.state.ledger = AppState(settings, db, events, svc, auth, metrics, privacy=privacy_service)
        if stale_read_models is not None:
            app.state.ledger.stale_read_models = stale_read_models
        started = time.monotonic()
        log.info("api started", pool_size=db.get_max_size() if db is not None else 0)
        pruner = asyncio.get_running_loop().create_task(_prune_idempotency_keys(events, settings))
        try:
            async with _serve_metrics_port(settings, events, metrics):
                yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            if store is None:
                await events.aclose()
            if own_pool and db is not None:
                await db.close()
            worker_stopped()
            log.info("api stopped", uptime_s=round(time.monotonic() - started, 1))

    app = FastAPI(
        title="order-ledger",
        version="3.0.0",
        description="Event-sourced order ledger. Omneo-shaped order API; money is JSON decimal numbers "
        "in major units; errors are RFC 9457 problem+json.",
        lifespan=lifespan,
    )
    # Innermost first: the fast path runs inside the head guard, the deadline and the metrics.
    app.add_middleware(PlaceOrderFastPath, endpoint=orders.place_order_direct, route=orders.place_order_route())
    app.add_middleware(HeaderGuard, max_header_bytes=settings.api.max_header_bytes)
    app.add_middleware(RequestDeadline, timeout_s=settings.api.request_timeout_s)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _install_handlers(app)
    _ops_routes(app, settings, migrations)
    app.include_router(orders.router, tags=["orders"])
    app.include_router(audit.router, tags=["audit"])
    app.include_router(subjects.router, tags=["personal data"])
    for router in routers:
        app.include_router(router, tags=["read models"], responses=problem_responses(400, 401, 403, 422, 503))
    _custom_openapi(app, settings)
    return app

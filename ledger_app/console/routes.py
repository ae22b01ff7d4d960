"""The console's pages and actions under `/console` (server-rendered Jinja2, htmx for polling).

Scopes are the API's (`ledger.api.auth.SCOPES`): the order page needs `orders:read` (its
timeline, like `GET /api/v3/orders/{id}/events`, needs `audit:read`); the audit feed and the
operations page `audit:read`; every action (redrive, rebuild, rollback) `admin`, and a page
shows an action's button only to a session allowed to use it. Every POST needs the session's
CSRF value. Actions are logged (`console action`) with the signed-in token's name and id.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment

from consumers.fanout.delivery_store import list_halts, order_delivery
from consumers.fanout.operations import DESTINATIONS, redrive
from ledger.api.audit import decode_cursor, encode_cursor, event_json
from ledger.api.auth import Principal, TokenStore
from ledger.api.deps import AppState, read_raw, state_of
from ledger.api.problems import Problem
from ledger.domain.transactions import derive_transactions
from ledger.domain.views import order_to_json, transaction_to_json
from ledger.relay.offsets import load_offsets
from ledger.relay.publisher import partition_of
from ledger.relay.relay import checkpoint_name as relay_checkpoint_name
from ledger.repository import fold_steps
from ledger.store.store import load_checkpoint
from ledger_app.console.diff import diff
from ledger_app.console.operations import (
    Background,
    LagSampler,
    LatestReconciliation,
    RebuildTracker,
    parked_view,
    projections_view,
    sparkline,
)
from ledger_app.console.session import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Session,
    SessionCodec,
    csrf_ok,
)
from ledger_kernel.observability import get_logger
from ledger_kernel.settings import Settings
from ledger_kernel.wire.codec import dumps
from ledger_kernel.wire.streams import stream_id_of
from projections import queries, registry
from projections.db import connection
from projections.definition import Projection

log = get_logger(__name__)

HERE = Path(__file__).parent
PREFIX = "/console"
_FORM_LIMIT = 64 * 1024
_PAGE = 50
_EXPORT_PAGE = 1000


@dataclass
class ConsoleState:
    """Built once by `install_console`; the pool and store come from the API's `AppState`."""

    settings: Settings
    codec: SessionCodec
    env: Environment
    projections: Mapping[str, Projection]
    sampler: LagSampler
    rebuilds: RebuildTracker
    reconciliation: LatestReconciliation
    tokens: TokenStore | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    background: Background = field(default_factory=Background)


def console_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


class NotSignedIn(Exception):
    """No valid session: pages redirect to the sign-in form."""


@dataclass(frozen=True, slots=True)
class Visitor:
    principal: Principal
    session: Session


async def _visitor(request: Request) -> Visitor | None:
    console = console_of(request)
    session = console.codec.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    app_state = state_of(request)
    if app_state.pool is None:
        return None
    if console.tokens is None:
        console.tokens = TokenStore(app_state.pool)
    principal = await console.tokens.principal_by_id(session.token_id)
    return None if principal is None else Visitor(principal, session)


def _render(
    request: Request,
    template: str,
    visitor: Visitor | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    console = console_of(request)
    html = console.env.get_template(template).render(
        visitor=visitor,
        principal=visitor.principal if visitor else None,
        csrf=visitor.session.csrf if visitor else "",
        can=(lambda scope: visitor is not None and visitor.principal.allows(scope)),
        prefix=PREFIX,
        path=request.url.path,
        msg=request.query_params.get("msg"),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
    " frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _to_signin(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{PREFIX}/signin?next={quote(target, safe='')}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def _forbidden(request: Request, visitor: Visitor, scope: str) -> HTMLResponse:
    return _render(request, "error.html", visitor, status=403, title="Forbidden", detail=f"this needs the {scope!r} scope")


async def _page_guard(request: Request, scope: str) -> Visitor | Response:
    visitor = await _visitor(request)
    if visitor is None:
        return _to_signin(request)
    if not visitor.principal.allows(scope):
        return _forbidden(request, visitor, scope)
    return visitor


async def _form(request: Request) -> dict[str, str]:
    raw = await read_raw(request, _FORM_LIMIT)
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


async def _action_guard(request: Request, scope: str) -> tuple[Visitor, dict[str, str]] | Response:
    """A POST: signed in (else 401), CSRF value right (else 403), scope held (else 403)."""
    visitor = await _visitor(request)
    if visitor is None:
        return HTMLResponse("sign in first", status_code=401, headers=_SECURITY_HEADERS)
    form = await _form(request)
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not csrf_ok(visitor.session, given):
        return _render(request, "error.html", visitor, status=403, title="Forbidden", detail="missing or wrong CSRF token")
    if not visitor.principal.allows(scope):
        return _forbidden(request, visitor, scope)
    return visitor, form


def _log_action(visitor: Visitor, action: str, **target: Any) -> None:
    log.info(
        "console action",
        action=action,
        actor=visitor.principal.name,
        token_id=visitor.principal.token_id,
        **target,
    )


def _parse_time(text: str | None) -> datetime | None:
    """RFC 3339, or a browser's `datetime-local` value (read as UTC); empty is None."""
    if not text:
        return None
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


router = APIRouter(prefix=PREFIX, include_in_schema=False)


# -- sign-in ---------------------------------------------------------------------------------


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    nonce, cookie = console_of(request).codec.signin_nonce()
    response = _render(request, "signin.html", None, nonce=nonce, next=_safe_next(request.query_params.get("next")))
    response.set_cookie(SIGNIN_COOKIE, cookie, httponly=True, samesite="strict", path=PREFIX, max_age=3600)
    return response


def _safe_next(target: str | None) -> str:
    """Only a path of the console itself (no open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/orders"


@router.post("/signin")
async def signin(request: Request) -> Response:
    console = console_of(request)
    form = await _form(request)
    if not console.codec.signin_nonce_ok(request.cookies.get(SIGNIN_COOKIE), form.get(CSRF_FIELD)):
        return _render(request, "error.html", None, status=403, title="Forbidden", detail="reload the sign-in page and try again")
    principal = await state_of(request).tokens.authenticate(form.get("token", "").strip())
    if principal is None:
        nonce, cookie = console.codec.signin_nonce()
        response = _render(
            request, "signin.html", None, status=401, nonce=nonce, next=_safe_next(form.get("next")),
            error="unknown or revoked token",
        )
        response.set_cookie(SIGNIN_COOKIE, cookie, httponly=True, samesite="strict", path=PREFIX, max_age=3600)
        return response
    value, _ = console.codec.issue(principal.token_id)
    log.info("console sign-in", actor=principal.name, token_id=principal.token_id)
    done = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    done.set_cookie(
        SESSION_COOKIE,
        value,
        httponly=True,
        samesite="strict",
        secure=console.settings.console.cookie_secure,
        path=PREFIX,
        max_age=console.settings.console.session_max_age_s,
    )
    done.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
    return done


@router.post("/signout")
async def signout(request: Request) -> Response:
    visitor = await _visitor(request)
    form = await _form(request)
    if visitor is not None:
        if not csrf_ok(visitor.session, request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)):
            return _render(request, "error.html", visitor, status=403, title="Forbidden", detail="missing or wrong CSRF token")
        log.info("console sign-out", actor=visitor.principal.name, token_id=visitor.principal.token_id)
    response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/orders", status_code=303)


# -- orders ----------------------------------------------------------------------------------


@router.get("/orders")
async def find_orders(request: Request, q: str = "") -> Response:
    guard = await _page_guard(request, "orders:read")
    if isinstance(guard, Response):
        return guard
    q = q.strip()
    matches: list[dict[str, Any]] = []
    if q:
        app_state = state_of(request)
        try:
            oid = UUID(q)
        except ValueError:
            oid = None
        if oid is not None and await app_state.store.stream_version(stream_id_of(oid)) > 0:
            return RedirectResponse(f"{PREFIX}/orders/{oid}", status_code=303)
        assert app_state.pool is not None
        by_external, _ = await queries.list_orders(app_state.pool, external_id=q, limit=_PAGE)
        by_profile, _ = await queries.list_orders(app_state.pool, profile_id=q, limit=_PAGE)
        matches.extend({"matched": "external id", **doc} for doc in by_external)
        matches.extend({"matched": "profile id", **doc} for doc in by_profile)
        if len(matches) == 1:
            return RedirectResponse(f"{PREFIX}/orders/{matches[0]['id']}", status_code=303)
    return _render(request, "orders.html", guard, q=q, matches=matches, searched=bool(q))


@router.get("/orders/{order_id}")
async def order_page(request: Request, order_id: str, version: str = "", at: str = "") -> Response:
    guard = await _page_guard(request, "orders:read")
    if isinstance(guard, Response):
        return guard
    visitor = guard
    app_state = state_of(request)
    console = console_of(request)
    try:
        oid = UUID(order_id)
        as_version = int(version) if version else None
        as_of = _parse_time(at)
    except ValueError:
        return _render(request, "error.html", visitor, status=404, title="Not found", detail="no such order or point in time")
    current = await app_state.service.load(oid)
    if current is None:
        return _render(request, "error.html", visitor, status=404, title="Not found", detail=f"no order {oid}")
    shown = current
    if as_version is not None or as_of is not None:
        loaded = await app_state.service.load(oid, to_version=as_version, as_of=as_of)
        if loaded is None:
            return _render(request, "error.html", visitor, status=404, title="Not found", detail="the order did not exist then")
        shown = loaded
    view = order_to_json(shown)
    transactions = [transaction_to_json(t) for t in derive_transactions(shown)]
    timeline: list[dict[str, Any]] | None = None
    kafka: dict[str, Any] | None = None
    if visitor.principal.allows("audit:read"):
        rows = await app_state.store.read_stream(stream_id_of(oid))
        published = None
        offsets: dict[int, int] = {}
        if app_state.pool is not None:
            name = relay_checkpoint_name(console.settings.kafka.events_topic)
            published = await load_checkpoint(app_state.pool, name)
            offsets = await load_offsets(app_state.pool, name)
        timeline = []
        before: dict[str, Any] | None = None
        for row, state in fold_steps(rows):
            after = order_to_json(state)
            timeline.append(
                {
                    "row": row,
                    "actor": row.metadata.get("actor"),
                    "source": row.metadata.get("source"),
                    "changes": diff(before, after),
                    "published": published is not None and (row.tx, row.position) <= tuple(published),
                }
            )
            before = after
        partition = partition_of(str(oid).encode(), console.settings.kafka.partitions)
        kafka = {
            "topic": console.settings.kafka.events_topic,
            "partition": partition,
            "end_offset": offsets.get(partition),
            "published_up_to": None if published is None else published.position,
        }
    delivery = await order_delivery(app_state.pool, str(oid)) if app_state.pool is not None else []
    return _render(
        request,
        "order.html",
        visitor,
        order=view,
        current_version=current.version,
        as_of_version=as_version,
        as_of_time=at,
        historical=shown.version != current.version or as_of is not None,
        transactions=transactions,
        timeline=timeline,
        delivery=delivery,
        kafka=kafka,
    )


# -- audit feed ------------------------------------------------------------------------------

_AUDIT_FILTERS = ("since", "until", "type", "actor", "source")


async def _audit_rows(request: Request, filters: Mapping[str, str], cursor: str | None, limit: int) -> list[Any]:
    app_state = state_of(request)
    for text in filters.values():
        if "\x00" in text or not text.isprintable():
            raise Problem(422, "validation-error", "filters must be printable text")
    return await app_state.store.read_events(
        since=_parse_time(filters.get("since")),
        until=_parse_time(filters.get("until")),
        types=[t.strip() for t in filters["type"].split(",") if t.strip()] if filters.get("type") else None,
        actor=filters.get("actor") or None,
        source=filters.get("source") or None,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )


def _filters(request: Request) -> dict[str, str]:
    return {k: request.query_params[k].strip() for k in _AUDIT_FILTERS if request.query_params.get(k, "").strip()}



@router.get("/audit")
async def audit_page(request: Request) -> Response:
    guard = await _page_guard(request, "audit:read")
    if isinstance(guard, Response):
        return guard
    filters = _filters(request)
    cursor = request.query_params.get("cursor") or None
    try:
        limit = int(request.query_params.get("limit") or _PAGE)
        if not 1 <= limit <= 500:
            raise ValueError("limit is 1 to 500")
        rows = await _audit_rows(request, filters, cursor, limit)
    except (ValueError, Problem) as exc:
        return _render(request, "error.html", guard, status=422, title="Invalid filter", detail=str(exc))
    if limit != _PAGE:
        filters["limit"] = str(limit)
    next_cursor = encode_cursor(rows[-1].checkpoint) if len(rows) == limit else None
    return _render(
        request,
        "audit.html",
        guard,
        rows=rows,
        filters=filters,
        query=urlencode(filters),
        next_query=urlencode({**filters, "cursor": next_cursor}) if next_cursor else None,
        first_page=cursor is None,
    )


_CSV_COLUMNS = ("recorded_at", "position", "order_id", "version", "type", "actor", "source", "event_id", "data")


@router.get("/audit/export.{fmt}")
async def audit_export(request: Request, fmt: str) -> Response:
    guard = await _page_guard(request, "audit:read")
    if isinstance(guard, Response):
        return guard
    if fmt not in ("jsonl", "csv"):
        return _render(request, "error.html", guard, status=404, title="Not found", detail="formats: jsonl, csv")
    filters = _filters(request)
    try:
        first = await _audit_rows(request, filters, None, _EXPORT_PAGE)
    except (ValueError, Problem) as exc:
        return _render(request, "error.html", guard, status=422, title="Invalid filter", detail=str(exc))
    _log_action(guard, "audit export", format=fmt, filters=filters)

    async def lines() -> AsyncIterator[bytes]:
        rows = first
        if fmt == "csv":
            yield _csv_line(_CSV_COLUMNS)
        while rows:
            for row in rows:
                item = event_json(row)
                if fmt == "jsonl":
                    yield dumps(item) + b"\n"
                else:
                    yield _csv_line(
                        [
                            item["recorded_at"], item["position"], item["order_id"], item["version"], item["type"],
                            row.metadata.get("actor", ""), row.metadata.get("source", ""), item["event_id"],
                            dumps(item["data"]).decode(),
                        ]
                    )
            if len(rows) < _EXPORT_PAGE:
                return
            rows = await _audit_rows(request, filters, encode_cursor(rows[-1].checkpoint), _EXPORT_PAGE)

    media = "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(
        lines(),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit.{fmt}"', "Cache-Control": "no-store"},
    )


_FORMULA = re.compile(r"^[=+\-@\t\r]")


def _csv_line(values: Any) -> bytes:
    """One CSV row; a cell a spreadsheet would run as a formula is prefixed with a quote."""
    out = io.StringIO()
    cells = [("'" + v) if isinstance(v, str) and _FORMULA.match(v) else v for v in values]
    csv.writer(out).writerow(cells)
    return out.getvalue().encode()


# -- operations ------------------------------------------------------------------------------


async def _ops_context(request: Request) -> dict[str, Any]:
    console = console_of(request)
    pool = _pool(request)
    charts = [(name, sparkline(points), points[-1][1] if points else None) for name, points in console.sampler.series().items()]
    return {
        "charts": charts,
        "projections": await projections_view(pool, list(console.projections.values())),
        "deploy_versions": {name: p.version for name, p in console.projections.items()},
        "rebuilds": console.rebuilds.runs,
        "parked": await parked_view(pool),
        "halts": await list_halts(pool),
        "reconciliation": await console.reconciliation(pool),
        "destinations": DESTINATIONS,
    }


def _pool(request: Request) -> asyncpg.Pool:
    app_state: AppState = state_of(request)
    assert app_state.pool is not None, "the console needs the PostgreSQL store"
    return app_state.pool


async def _ops_view(request: Request, template: str) -> Response:
    """The ops page or one of the fragments it refreshes: one guard, one context, its own template."""
    guard = await _page_guard(request, "audit:read")
    if isinstance(guard, Response):
        return guard
    return _render(request, template, guard, **await _ops_context(request))


@router.get("/ops")
async def ops_page(request: Request) -> Response:
    return await _ops_view(request, "ops.html")


@router.get("/ops/charts")
async def ops_charts(request: Request) -> Response:
    return await _ops_view(request, "_charts.html")


@router.get("/ops/projections")
async def ops_projections(request: Request) -> Response:
    return await _ops_view(request, "_projections.html")


def _back(message: str) -> Response:
    return RedirectResponse(f"{PREFIX}/ops?{urlencode({'msg': message})}", status_code=303)


@router.post("/ops/redrive")
async def ops_redrive(request: Request) -> Response:
    guard = await _action_guard(request, "admin")
    if isinstance(guard, Response):
        return guard
    visitor, form = guard
    destination, order_id = form.get("destination", ""), form.get("order_id", "")
    if destination not in DESTINATIONS or not order_id:
        return _render(request, "error.html", visitor, status=422, title="Invalid", detail="destination and order_id")
    _log_action(visitor, "redrive", destination=destination, order_id=order_id)
    console = console_of(request)
    task = console.background.start(
        redrive(console.settings, _pool(request), destination=destination, order_id=order_id, **console.extra)
    )
    # within the request's deadline (ledger.api.deadline) if it can; a longer redrive goes on
    done, _ = await asyncio.wait({task}, timeout=console.settings.api.request_timeout_s / 2)
    if not done:
        return _back(f"{destination}: order {order_id} is being redriven; reload to see the outcome")
    results = task.result()
    if not results:
        return _back(f"{destination}: order {order_id} was not parked")
    result = results[0]
    if result.stopped is None:
        return _back(f"{destination}: order {order_id} redriven, {result.delivered} event(s) delivered")
    return _back(f"{destination}: order {order_id} still parked: {result.stopped}")


async def _projection_guard(request: Request, name: str) -> tuple[Visitor, Projection] | Response:
    """An admin's action on one deployed projection: who asks and which one, or the refusal (404 if none)."""
    guard = await _action_guard(request, "admin")
    if isinstance(guard, Response):
        return guard
    visitor, _ = guard
    projection = console_of(request).projections.get(name)
    if projection is None:
        return _render(request, "error.html", visitor, status=404, title="Not found", detail=f"no projection {name!r}")
    return visitor, projection


@router.post("/ops/projections/{name}/rebuild")
async def ops_rebuild(request: Request, name: str) -> Response:
    guard = await _projection_guard(request, name)
    if isinstance(guard, Response):
        return guard
    visitor, projection = guard
    console = console_of(request)
    if console.rebuilds.running(name):
        return _back(f"{name}: a rebuild is already running")
    _log_action(visitor, "rebuild", projection=name, version=projection.version)
    console.rebuilds.start(
        _pool(request), projection, visitor.principal.name, page_size=console.settings.projections.rebuild_page_size
    )
    return _back(f"{name}: rebuild of v{projection.version} started")


@router.post("/ops/projections/{name}/rollback")
async def ops_rollback(request: Request, name: str) -> Response:
    guard = await _projection_guard(request, name)
    if isinstance(guard, Response):
        return guard
    visitor, projection = guard
    _log_action(visitor, "rollback", projection=name)
    try:
        async with connection(_pool(request)) as conn:
            done = await registry.rollback(conn, projection)
    except registry.ProjectionError as exc:
        return _back(f"{name}: rollback refused: {exc}")
    return _back(f"{name}: v{done.to_version} is live again (v{done.from_version} kept as previous)")

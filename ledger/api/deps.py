"""Request plumbing shared by the routers: app state, auth, body reading, headers.

Bodies are read by hand (not by FastAPI's body parameters) because money must stay exact: the
stdlib parser with `parse_float=Decimal` (`ledger_kernel.wire.codec.parse_json`) feeds `Model.model_validate`. The
routes still document their bodies in OpenAPI through `body_doc`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from fastapi import Request
from pydantic import BaseModel, ValidationError

from ledger.api.auth import Authenticator, Principal
from ledger.api.problems import Problem, field_errors
from ledger.privacy.erasure import PrivacyService
from ledger.service import Actor, OrderService, RequestMeta
from ledger.store import EventStoreProtocol
from ledger_kernel.observability import get_logger
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import Settings
from ledger_kernel.wire.codec import BodyError, parse_json

M = TypeVar("M", bound=BaseModel)
StaleReadModels = Callable[[asyncpg.Pool, str], Awaitable[list[str]]]
log = get_logger(__name__)

_KEY_RE = re.compile(r"^[A-Za-z0-9._:~+/=-]{8,255}$")
_ETAG_RE = re.compile(r'^"?(\d{1,9})"?$')
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
BODY_MODELS: dict[str, type[BaseModel]] = {}


async def _no_stale_read_models(db: asyncpg.Pool, stream_id: str) -> list[str]:
    return []


@dataclass
class AppState:
    """Everything a request needs, built once by the composition root (`create_app`)."""

    settings: Settings
    #: None when the app runs on an in-memory store (unit tests): no readiness or read models.
    pool: asyncpg.Pool | None
    store: EventStoreProtocol
    service: OrderService
    tokens: Authenticator
    metrics: Metrics
    #: The read models serving stale rows for an order (a stream id): injected by the root,
    #: since the write side does not import `projections`; none by default.
    stale_read_models: StaleReadModels = _no_stale_read_models
    #: Erasure, export and report (docs/privacy.md); None when no key-encryption key is set.
    privacy: PrivacyService | None = None


def state_of(request: Request) -> AppState:
    """The app's state object."""
    app_state: AppState = request.app.state.ledger
    return app_state


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates the bearer token and checks one scope (401/403)."""

    async def dependency(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "unauthorized",
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = await state_of(request).tokens.authenticate(token.strip())
        if principal is None:
            raise Problem(
                401,
                "unauthorized",
                "unknown or revoked token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if not principal.allows(scope):
            raise Problem(403, "forbidden", f"this route needs the {scope!r} scope", required_scope=scope)
        request.state.principal = principal
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def actor_of(principal: Principal) -> Actor:
    """The actor recorded in event metadata for a token."""
    return Actor(name=principal.name, client_id=principal.client_id)


def request_meta(request: Request, route: str) -> RequestMeta:
    """Metadata of an HTTP command: request id (client's `X-Request-Id` if sane) and correlation."""
    rid = request.headers.get("x-request-id", "")
    if not _REQUEST_ID_RE.fullmatch(rid):
        rid = str(uuid.uuid4())
    correlation = request.headers.get("x-correlation-id", "")
    if not _REQUEST_ID_RE.fullmatch(correlation):
        correlation = rid
    request.state.request_id = rid
    return RequestMeta(source="http", request_id=rid, route=route, correlation_id=correlation)


def idempotency_key(request: Request) -> str | None:
    """The `Idempotency-Key` header, validated (400 when malformed or low-entropy)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip().strip('"')
    if not _KEY_RE.fullmatch(key) or len(set(key)) < 4:
        raise Problem(
            400,
            "invalid-idempotency-key",
            "Idempotency-Key must be 8-255 characters of [A-Za-z0-9._:~+/=-] with some variety (e.g. a UUID)",
        )
    return key


def if_match(request: Request) -> int | None:
    """The expected version from `If-Match: "<version>"`; None when absent or `*`."""
    value = request.headers.get("if-match")
    if value is None or value.strip() == "*":
        return None
    value = value.strip()
    if value.startswith("W/"):
        # RFC 9110 §13.1.1: If-Match compares strongly, so a weak tag can never match.
        raise Problem(
            400, "invalid-if-match", 'If-Match takes the strong ETag this API sends, e.g. "3", not W/"3"'
        )
    match = _ETAG_RE.fullmatch(value)
    if match is None:
        raise Problem(400, "invalid-if-match", 'If-Match must be an ETag of this API, e.g. "3"')
    return int(match[1])


def _check_content_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise Problem(
            415, "unsupported-media-type", "send Content-Type: application/json", accept="application/json"
        )
    charset = re.search(r"charset=([^;\s]+)", ctype, re.IGNORECASE)
    if charset and charset[1].strip('"').lower() not in ("utf-8", "utf8"):
        raise Problem(415, "unsupported-media-type", "JSON bodies must be UTF-8")


async def read_raw(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes (by Content-Length and while streaming)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Problem(413, "body-too-large", f"bodies are limited to {limit} bytes", max_bytes=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "body-too-large", f"bodies are limited to {limit} bytes", max_bytes=limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(
    request: Request, model: type[M], *, empty_ok: bool = False, extra: dict[str, Any] | None = None
) -> M:
    """Read, parse and validate a JSON body into `model` (400/413/415/422 as problems).

    `extra` holds fields taken from the path; a body naming one with another value is a 422.
    """
    settings = state_of(request).settings
    raw = await read_raw(request, settings.api.max_body_bytes)
    if not raw.strip():
        if not empty_ok:
            raise Problem(400, "malformed-json", "a JSON body is required")
        data: Any = {}
    else:
        _check_content_type(request)
        try:
            data = parse_json(raw)
        except BodyError as exc:
            slug = "malformed-json" if exc.status == 400 else "validation-error"
            errors = [{"loc": ["body", *exc.loc], "msg": exc.reason, "type": "json"}]
            raise Problem(exc.status, slug, exc.reason, errors=errors) from None
    if not isinstance(data, dict):
        raise Problem(
            422,
            "validation-error",
            "the body must be a JSON object",
            errors=[{"loc": ["body"], "msg": "must be an object", "type": "object_type"}],
        )
    for name, value in (extra or {}).items():  # values from the path: the body may repeat, not contradict
        if name in data and data[name] != value:
            raise Problem(
                422,
                "validation-error",
                f"the body's {name} differs from the one in the path",
                errors=[
                    {"loc": ["body", name], "msg": "must equal the path's value", "type": "path_mismatch"}
                ],
            )
        data[name] = value
    try:
        return model.model_validate(data, context={"max_lines": settings.api.max_lines})
    except ValidationError as exc:
        raise Problem(
            422, "validation-error", "the body does not match the schema", errors=field_errors(exc.errors())
        ) from None
    except TypeError as exc:  # a validator that did not expect this input: still the input's fault
        log.warning("validator raised TypeError", model=model.__name__, error=repr(exc))
        raise Problem(422, "validation-error", "the body does not match the schema") from None


def body_doc(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` documenting a hand-read JSON body (the schema lands in components)."""
    BODY_MODELS[model.__name__] = model
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def parse_order_id(raw: str) -> uuid.UUID:
    """Order ids are UUIDs; anything else cannot name an order (404, not 422)."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(404, "not-found", "no order has this id") from None


__all__ = [
    "AppState",
    "actor_of",
    "body_doc",
    "idempotency_key",
    "if_match",
    "parse_order_id",
    "read_body",
    "request_meta",
    "require",
    "state_of",
]

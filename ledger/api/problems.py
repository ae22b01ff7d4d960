"""RFC 9457 problem details: every error the API returns goes through `Problem`.

`type` is a stable URN per kind of failure (`urn:order-ledger:problem:<slug>`), so clients branch
on it instead of parsing `detail`. The same shape is used for rejected Kafka intake commands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
_PREFIX = "urn:order-ledger:problem:"

TITLES: dict[str, str] = {
    "malformed-json": "Malformed JSON body",
    "validation-error": "The request is not valid",
    "domain-rule": "The command breaks a business rule",
    "unauthorized": "Missing or invalid bearer token",
    "forbidden": "The token lacks the required scope",
    "not-found": "Not found",
    "gone": "The order was deleted",
    "version-conflict": "The order changed since the given version",
    "duplicate-external-id": "An order with this external_id already exists",
    "idempotency-key-reused": "The idempotency key was used for a different request",
    "idempotency-in-progress": "A request with this idempotency key is still in progress",
    "invalid-idempotency-key": "The Idempotency-Key header is not valid",
    "invalid-if-match": "The If-Match header is not valid",
    "body-too-large": "The request body is too large",
    "order-too-large": "The order would be too large to publish",
    "unsupported-media-type": "Unsupported content type",
    "method-not-allowed": "Method not allowed",
    "header-too-large": "The request headers are too large",
    "bad-request": "Bad request",
    "service-unavailable": "The service is temporarily unavailable",
    "internal-error": "Internal error",
}


def problem_type(slug: str) -> str:
    """The machine-readable `type` URI of a problem slug."""
    return _PREFIX + slug


class Problem(Exception):
    """An error response; raise it anywhere in a request and the app renders it."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str | None = None,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or slug)
        self.status = status
        self.slug = slug
        self.title = title or TITLES.get(slug, slug.replace("-", " ").capitalize())
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        """The problem+json body."""
        body: dict[str, Any] = {"type": problem_type(self.slug), "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


def field_errors(errors: Any, prefix: tuple[str | int, ...] = ("body",)) -> list[dict[str, Any]]:
    """Pydantic `ValidationError.errors()` reduced to `{loc, msg, type}` without echoing input.

    The offending input is left out on purpose: it may be huge or hold characters we refuse.
    """
    out: list[dict[str, Any]] = []
    for err in errors:
        loc = [*prefix, *[part for part in err.get("loc", ()) if isinstance(part, str | int)]]
        out.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return out


_SUBJECT_PATH = re.compile(r"(/subjects/)[^/]+")


def loggable_path(path: str) -> str:
    """A request path fit for logs: a data subject in it (`/subjects/email:...`) is left out
    (docs/privacy.md#logs)."""
    return _SUBJECT_PATH.sub(r"\1<subject>", path)

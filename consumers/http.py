"""One outbound call to a destination, classified into a typed outcome.

Why: workers decide retry / park / stop from one value instead of raw status codes
(docs/architecture.md#fanout, docs/reliability.md#f13 to #f15); reads are bounded so a hostile or broken vendor cannot
exhaust memory (S7); request headers never appear in an outcome, so secrets cannot leak
into logs or parked rows (S9). There is no retry loop here: the worker owns retries.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Self

import httpx

if TYPE_CHECKING:
    from ledger_kernel.settings import DestinationSettings

MAX_RESPONSE_BYTES = 1024 * 1024
"""Largest response body read (S7); anything bigger is a failed call."""

MAX_KEPT_ERROR_CHARS = 4096
"""Error bodies that are not JSON are kept as text up to this size (enough to park with)."""

MAX_RETRY_AFTER_S = 3600.0
"""A vendor asking for more than an hour is clamped so a bad header cannot wedge a worker."""

PermanentReason = Literal[
    "bad_request", "not_found", "conflict", "already_exists", "validation", "too_large", "unexpected_status"
]


@dataclass(frozen=True, slots=True)
class Success:
    """2xx with a well-formed body; `remote_id` is the vendor's id when the call returns one."""

    status: int
    body: Any = None
    remote_id: str | None = None


@dataclass(frozen=True, slots=True)
class Retryable:
    """Try again later: 408/429/5xx, timeouts, connection errors, unusable 2xx.

    `ambiguous` means the vendor may already have applied the request (read timeout, 500/502/504,
    garbage 2xx): for non-idempotent calls (Omneo POST /orders) look the record up before retrying.
    """

    reason: str
    status: int | None = None
    retry_after: float | None = None
    ambiguous: bool = False
    body: Any = None


@dataclass(frozen=True, slots=True)
class Permanent:
    """A 4xx that will never succeed as sent: park the order with `body` (F15)."""

    status: int
    reason: PermanentReason
    body: Any = None


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """401/403: stop the destination and alert instead of retry-storming (F15, S9).

    `possibly_throttled` is set for Omnisend 403, which v3 also uses for "blocked due to many
    errors in a particular time" (docs/connectors.md#omnisend-v3-orders): the worker may probe again after a pause.
    """

    status: int
    body: Any = None
    possibly_throttled: bool = False


Outcome = Success | Retryable | Permanent | AuthFailure


def parse_retry_after(headers: Mapping[str, str], status: int, now: float | None = None) -> float | None:
    """Seconds to wait before retrying, or None when the response does not say.

    `Retry-After` (delta-seconds or HTTP-date, RFC 9110) wins. On 429 only, the rate-limit reset
    headers are used: Omnisend `X-Rate-Limit-Reset` (seconds left in the period) and Laravel-style
    `X-RateLimit-Reset` (a Unix timestamp, or seconds when small).
    """
    now = time.time() if now is None else now
    lowered = {k.lower(): v for k, v in headers.items()}
    value = _seconds_from_retry_after(lowered.get("retry-after"), now)
    if value is None and status == 429:
        for name in ("x-rate-limit-reset", "x-ratelimit-reset"):
            value = _seconds_from_reset(lowered.get(name), now)
            if value is not None:
                break
    if value is None:
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER_S)


def _seconds_from_retry_after(raw: str | None, now: float) -> float | None:
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return when.timestamp() - now


def _seconds_from_reset(raw: str | None, now: float) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return value - now if value > 1_000_000_000 else value


def backoff_delay(
    attempt: int,
    *,
    initial_s: float,
    max_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number `attempt` (1-based): capped exponential with full jitter.

    Full jitter (AWS) spreads many workers apart; when the vendor named a wait, the retry never
    happens before it and a little jitter on top keeps workers out of lockstep (F13).
    """
    draw = (rng or random).uniform
    if retry_after is not None:
        return retry_after + draw(0.0, min(initial_s, max_s))
    exponent = min(max(attempt, 1) - 1, 62)
    ceiling = min(max_s, initial_s * (2.0**exponent))
    return draw(0.0, ceiling)


def classify_response(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    truncated: bool = False,
    now: float | None = None,
) -> Outcome:
    """Map one HTTP response to an outcome (without the vendor-specific id extraction)."""
    if 200 <= status < 300:
        if truncated:
            return Retryable("response_too_large", status=status, ambiguous=True)
        if not raw.strip():
            return Success(status=status)
        try:
            return Success(status=status, body=json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            return Retryable("invalid_response", status=status, ambiguous=True, body=_error_body(raw))
    body = _error_body(raw)
    if status == 403 and _rate_limited(headers, body):
        # Omnisend v3 also answers 403 when it throttles a client after many errors: with a
        # rate-limit signature it is a pause, not refused credentials (docs/connectors.md).
        return Retryable(
            "http_403_throttled", status=403, retry_after=parse_retry_after(headers, 429, now), body=body
        )
    if status in (401, 403):
        return AuthFailure(status=status, body=body)
    if status in {408, 429} or status >= 500:
        return Retryable(
            f"http_{status}",
            status=status,
            retry_after=parse_retry_after(headers, status, now),
            ambiguous=status >= 500 and status != 503,
            body=body,
        )
    reason: PermanentReason = {
        400: "bad_request",
        404: "not_found",
        409: "conflict",
        413: "too_large",
        422: "validation",
    }.get(status, "unexpected_status")  # type: ignore[assignment]
    return Permanent(status=status, reason=reason, body=body)


_THROTTLE_WORDS = ("rate limit", "too many", "many errors", "throttl")


def _rate_limited(headers: Mapping[str, str], body: Any) -> bool:
    """A 403 that says it is throttling: Retry-After, an exhausted rate-limit header, or its words."""
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    if "retry-after" in lowered:
        return True
    if lowered.get("x-rate-limit-remaining") == "0" or lowered.get("x-ratelimit-remaining") == "0":
        return True
    text = (body.get("error") or body.get("message") or "") if isinstance(body, dict) else body
    return isinstance(text, str) and any(word in text.lower() for word in _THROTTLE_WORDS)


def _error_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw[:MAX_KEPT_ERROR_CHARS].decode("utf-8", "replace")


def encode_json(payload: Any) -> bytes:
    """JSON bytes for a payload; `Decimal` goes out as a number only when that is exact."""

    def default(value: object) -> object:
        if isinstance(value, Decimal):
            as_float = float(value)
            if not value.is_finite() or Decimal(repr(as_float)) != value.normalize():
                raise ValueError(f"Decimal {value} has no exact JSON number form")
            return as_float
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    return json.dumps(payload, default=default, allow_nan=False, separators=(",", ":")).encode()


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    json_body: Any = None,
    params: Mapping[str, str] | None = None,
    max_bytes: int = MAX_RESPONSE_BYTES,
    deadline_s: float | None = None,
    remote_id: Callable[[Any], str | None] | None = None,
) -> Outcome:
    """Make one call and classify it; httpx errors become outcomes, never exceptions.

    `deadline_s` bounds the whole exchange, so a slow-drip body cannot outlive the client
    timeout (httpx timeouts are per read). `remote_id` extracts the vendor id from a 2xx body;
    a 2xx without one is an unusable (ambiguous) answer.
    """
    content = None if json_body is None else encode_json(json_body)
    headers = {"Content-Type": "application/json"} if content is not None else None
    try:
        async with asyncio.timeout(deadline_s):
            async with http.stream(method, url, content=content, params=params, headers=headers) as resp:
                raw, truncated = await _read_bounded(resp, max_bytes)
                status, resp_headers = resp.status_code, dict(resp.headers)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return Retryable("connect_error")
    except httpx.PoolTimeout:
        return Retryable("pool_timeout")
    except (httpx.TimeoutException, TimeoutError):
        return Retryable("timeout", ambiguous=True)
    except httpx.TransportError as exc:
        return Retryable(f"transport_error:{type(exc).__name__}", ambiguous=True)
    except httpx.HTTPError as exc:  # e.g. a body that fails to decode: the vendor did answer
        return Retryable(f"http_error:{type(exc).__name__}", ambiguous=True)
    outcome = classify_response(status, resp_headers, raw, truncated=truncated)
    if isinstance(outcome, Success) and remote_id is not None:
        try:
            found = remote_id(outcome.body)
        except (KeyError, TypeError, AttributeError):
            found = None
        if found is None:
            return Retryable("missing_remote_id", status=status, ambiguous=True, body=outcome.body)
        return Success(status=outcome.status, body=outcome.body, remote_id=found)
    return outcome


async def _read_bounded(resp: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    declared = resp.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


class VendorClient:
    """What both destination clients share: an injected `httpx.AsyncClient` and a whole-call deadline.

    The deadline bounds the entire call (connect, send, slow-drip body), which httpx's per-phase
    timeouts alone do not; reads stop at `max_response_bytes` (docs/reliability.md#s7).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        deadline_s: float | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self._http = http
        self._deadline_s = deadline_s
        self._max = max_response_bytes

    @classmethod
    def from_settings(cls, settings: DestinationSettings, http: httpx.AsyncClient) -> Self:
        """Whole-call deadline = the configured client timeout (10 s by default)."""
        return cls(http, deadline_s=settings.timeout_s)


class HeaderAuth(httpx.Auth):
    """Adds one secret header per request, so the secret is never in client defaults or reprs."""

    def __init__(self, header: str, value: str) -> None:
        self._header = header
        self._value = value

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers[self._header] = self._value
        yield request

    def __repr__(self) -> str:
        return f"HeaderAuth({self._header}=<redacted>)"


def strip_suffix(base_url: str, suffix: str) -> str:
    """Accept a base URL given with or without the vendor's version prefix."""
    trimmed = base_url.rstrip("/")
    return trimmed[: -len(suffix)] if trimmed.endswith(suffix) else trimmed

"""Pieces every sandbox shares: an injectable clock, a sliding-window limiter, the request
log and fault injection.

Why a clock: rate-limit windows and timed faults must be testable without sleeping 60 s.
Why a lock: state is read by HTTP handlers and by in-process test code (other threads).
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

REDACTED = "[REDACTED]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie"})
_SECRET_HINTS = ("api-key", "apikey", "token", "secret", "password")


class Clock(Protocol):
    """Wall-clock seconds since the epoch; tests inject `ManualClock`."""

    def time(self) -> float: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to, for deterministic rate-limit tests."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@dataclass(frozen=True, slots=True)
class RateDecision:
    """One limiter answer; `reset_s` is whole seconds until a slot frees (docs/connectors.md#omnisend-rate-limits)."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int


class SlidingWindowLimiter:
    """At most `limit` accepted requests in any `window_s` span; rejected ones do not count."""

    def __init__(self, limit: int, window_s: float, clock: Clock) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> RateDecision:
        with self._lock:
            now = self._clock.time()
            while self._hits and self._hits[0] <= now - self.window_s:
                self._hits.popleft()
            allowed = len(self._hits) < self.limit
            if allowed:
                self._hits.append(now)
            oldest = self._hits[0] if self._hits else now
            reset = max(1, math.ceil(oldest + self.window_s - now))
            return RateDecision(allowed, self.limit, self.limit - len(self._hits), reset)

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header copy safe to expose at /_sandbox/requests: credentials are replaced (S9)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        secret = low in _SECRET_HEADERS or any(hint in low for hint in _SECRET_HINTS)
        out[low] = REDACTED if secret else value
    return out


class RequestLog:
    """What the destination received, in arrival order, with stable indexes for `?since=`."""

    def __init__(self, max_entries: int) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._next = 0
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> int:
        with self._lock:
            index = self._next
            self._next += 1
            self._entries.append({"index": index, **entry})
            return index

    def since(self, index: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._entries if e["index"] >= index]

    @property
    def next_index(self) -> int:
        with self._lock:
            return self._next

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._next = 0


FaultKind = Literal["status", "hang", "rate_limit_storm", "reject_order", "reset_connection"]


class FaultSpecError(ValueError):
    """A fault description that cannot be understood (control endpoint answers 400)."""


@dataclass(slots=True)
class Fault:
    """One active fault. `remaining`/`until` bound it; `paths` are glob patterns on the vendor path."""

    id: int
    kind: FaultKind
    status: int = 503
    remaining: int | None = None
    until: float | None = None
    paths: tuple[str, ...] = ("*",)
    methods: tuple[str, ...] = ()
    hang_seconds: float = 0.0
    reset_seconds: int = 60
    order_id: str | None = None
    body: str | None = None
    body_bytes: int | None = None
    retry_after: str | None = None
    hits: int = field(default=0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_ids = itertools.count(1)


def parse_fault(spec: Mapping[str, Any], now: float) -> Fault:
    """Build a fault from the control-endpoint JSON (see the package docstring for the forms)."""
    flat: dict[str, Any] = dict(spec)
    for key in ("rate_limit_storm", "hang", "reset_connection"):
        if isinstance(flat.get(key), Mapping):
            flat.update(flat[key])
            flat[key] = True
    kind: FaultKind
    if "reject_order" in flat:
        kind = "reject_order"
    elif flat.get("rate_limit_storm"):
        kind = "rate_limit_storm"
    elif "hang_seconds" in flat or flat.get("hang"):
        kind = "hang"
    elif flat.get("reset_connection"):
        kind = "reset_connection"
    elif "status" in flat or "body" in flat or "body_bytes" in flat:
        kind = "status"
    else:
        raise FaultSpecError("a fault needs one of status, hang_seconds, rate_limit_storm, reject_order")
    try:
        default_status = {"reject_order": 422, "rate_limit_storm": 429}.get(
            kind, 503 if "body" not in flat else 200
        )
        status = int(flat.get("status", default_status))
        count = flat.get("count")
        for_seconds = flat.get("for_seconds")
        paths = flat.get("paths", "*")
        methods = flat.get("methods", ())
        fault = Fault(
            id=next(_ids),
            kind=kind,
            status=status,
            remaining=None if count is None else int(count),
            until=None if for_seconds is None else now + float(for_seconds),
            paths=(paths,) if isinstance(paths, str) else tuple(str(p) for p in paths),
            methods=((methods,) if isinstance(methods, str) else tuple(str(m) for m in methods)),
            hang_seconds=float(flat.get("hang_seconds", 0.0)),
            reset_seconds=int(flat.get("reset_seconds", 60)),
            order_id=None if flat.get("reject_order") is None else str(flat["reject_order"]),
            body=None if flat.get("body") is None else str(flat["body"]),
            body_bytes=None if flat.get("body_bytes") is None else int(flat["body_bytes"]),
            retry_after=None if flat.get("retry_after") is None else str(flat["retry_after"]),
        )
    except (TypeError, ValueError) as exc:
        raise FaultSpecError(str(exc)) from exc
    if not 100 <= fault.status <= 599:
        raise FaultSpecError("status must be an HTTP status code")
    fault.methods = tuple(m.upper() for m in fault.methods)
    return fault


class FaultSet:
    """Active faults; `match` consumes one use of the first fault that applies."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, spec: Mapping[str, Any]) -> Fault:
        fault = parse_fault(spec, self._clock.time())
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._expire()
            return [f.to_json() for f in self._faults]

    def match(self, method: str, path: str, order_keys: set[str]) -> Fault | None:
        with self._lock:
            self._expire()
            for fault in self._faults:
                if fault.methods and method.upper() not in fault.methods:
                    continue
                if not any(fnmatch.fnmatchcase(path, pattern) for pattern in fault.paths):
                    continue
                if fault.kind == "reject_order" and fault.order_id not in order_keys:
                    continue
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
            return None

    def _expire(self) -> None:
        now = self._clock.time()
        self._faults = [
            f
            for f in self._faults
            if (f.remaining is None or f.remaining > 0) and (f.until is None or now < f.until)
        ]

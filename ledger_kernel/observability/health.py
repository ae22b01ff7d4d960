"""Readiness of a process without an HTTP server of its own, served beside its metrics.

Why: a process that is alive but must not be relied on (the relay holding because the broker
lost data) has to say so where orchestrators and operators look: `/readyz` answers 503 with the
reasons as JSON, `/healthz` answers 200 while the process serves at all, `/metrics` is the
Prometheus registry (the same port `serve_metrics` used, so scrapers need no change).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from ledger_kernel.observability.metrics import Metrics

_StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class Readiness:
    """Named reasons for not being ready; ready when there are none. Thread-safe enough: one
    dict replaced as a whole (written by the event loop, read by the server thread)."""

    def __init__(self, **reasons: str) -> None:
        self._reasons: dict[str, str] = dict(reasons)

    def block(self, key: str, reason: str) -> None:
        """Not ready because of `key` (replaces an earlier reason of the same key)."""
        self._reasons = {**self._reasons, key: reason}

    def clear(self, key: str) -> None:
        self._reasons = {k: v for k, v in self._reasons.items() if k != key}

    @property
    def ready(self) -> bool:
        return not self._reasons

    @property
    def reasons(self) -> dict[str, str]:
        return dict(self._reasons)


class _ThreadingServer(WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr; the server logs nothing."""


def ops_app(
    metrics: Metrics, readiness: Readiness
) -> Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]:
    """The WSGI app: `/readyz`, `/healthz`, everything else the metrics exposition."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in {"/readyz", "/healthz"}:
            reasons = readiness.reasons if path == "/readyz" else {}
            status = "503 Service Unavailable" if reasons else "200 OK"
            body = orjson.dumps({"status": "not ready" if reasons else "ok", "reasons": reasons})
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    return app


def serve_ops(port: int, metrics: Metrics, readiness: Readiness, host: str = "0.0.0.0") -> WSGIServer:
    """Serve `ops_app` on `port` in a daemon thread; returns the server (tests shut it down)."""
    server = make_server(host, port, ops_app(metrics, readiness), _ThreadingServer, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()
    return server

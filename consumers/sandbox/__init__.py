"""Faithful local sandboxes of Omneo and Omnisend (real HTTP servers, in-memory state).

Why: tests and `ledger dev` need destinations that enforce the vendors' documented auth,
validation, error shapes and rate limits (docs/connectors.md), and that can be made to fail
on demand. Start one with `run_in_background(create_omneo_app(cfg))` in tests, or
`serve(vendor, host, port, token)` for the CLI.

Control surface (both sandboxes, never authenticated or rate limited):
- `GET /_sandbox/requests[?since=N]` -> `{"requests": [...], "next": N}`; each entry has
  index, method, path, query, headers (credentials redacted), body, status, time, fault.
- `GET /_sandbox/state` -> current records (Omneo: orders, transactions by id; Omnisend:
  orders by orderID, events). `POST /_sandbox/reset` forgets records, log, faults, window.
- `POST /_sandbox/faults` with one object or a list; `GET` lists, `DELETE` clears. Forms:
  `{"status": 503, "count": N | "for_seconds": S, "paths": "glob", "methods": [..],
  "retry_after": "3"}`, `{"status": 200, "body": "garbage"}`, `{"status": 200,
  "body_bytes": 50000000}`, `{"hang_seconds": S}` (then answers normally),
  `{"rate_limit_storm": {"count": N, "reset_seconds": R}}`, `{"reject_order": "<id>",
  "status": 422}` (an orderID, Omneo id or external id), `{"reset_connection": true}`.
"""

from __future__ import annotations

from typing import Literal

from consumers.fanout.countries import CountryFormat
from consumers.omnisend.mapping import OrderNumberType
from consumers.sandbox.app import SandboxApp, SandboxConfig
from consumers.sandbox.core import ManualClock, SystemClock
from consumers.sandbox.omneo import OmneoConfig, OmneoSandbox
from consumers.sandbox.omneo import create_app as create_omneo_app
from consumers.sandbox.omnisend import OmnisendConfig, OmnisendSandbox
from consumers.sandbox.omnisend import create_app as create_omnisend_app
from consumers.sandbox.serving import run_in_background, serve_app

__all__ = [
    "ManualClock",
    "OmneoConfig",
    "OmneoSandbox",
    "OmnisendConfig",
    "OmnisendSandbox",
    "SandboxApp",
    "SandboxConfig",
    "SystemClock",
    "build_app",
    "create_omneo_app",
    "create_omnisend_app",
    "run_in_background",
    "serve",
]

Vendor = Literal["omneo", "omnisend"]


def build_app(
    vendor: Vendor,
    token: str | None = None,
    *,
    country_code_format: CountryFormat = "alpha3",
    order_number_type: OrderNumberType = "string",
) -> SandboxApp:
    """A sandbox with default config, optionally with a chosen token/API key.

    `country_code_format` is the Omnisend countryCode format the workers are set to send
    (`settings.omnisend.country_code_format`), so the sandbox validates whichever is set;
    `order_number_type` likewise (`settings.omnisend.order_number_type`).
    """
    if vendor == "omneo":
        omneo = OmneoConfig() if token is None else OmneoConfig(token=token)
        return create_omneo_app(omneo)
    omnisend = OmnisendConfig(country_code_format=country_code_format, order_number_type=order_number_type)
    if token is not None:
        omnisend.token = token
    return create_omnisend_app(omnisend)


async def serve(
    vendor: Vendor,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    *,
    country_code_format: CountryFormat = "alpha3",
    order_number_type: OrderNumberType = "string",
) -> None:
    """Foreground server for `ledger sandbox omneo|omnisend [--host --port --token]`."""
    app = build_app(
        vendor, token, country_code_format=country_code_format, order_number_type=order_number_type
    )
    await serve_app(app, host, port or (8081 if vendor == "omneo" else 8082))

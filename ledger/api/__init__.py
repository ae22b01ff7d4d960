"""HTTP API (FastAPI): order commands and reads, audit feed, health and metrics (docs/architecture.md#http-api).

`create_app` is imported lazily so `ledger.service` can use `ledger_kernel.wire.codec` without an
import cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ledger.api.app import create_app

        return create_app
    raise AttributeError(name)

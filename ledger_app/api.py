"""The HTTP API process as deployed: the write side's app with the read models' routes mounted.

Why here: `ledger.api` serves commands, order reads and the audit feed; the list routes belong
to `projections`. Neither may import the other, so the root joins them (docs/architecture.md#layers).
"""

from __future__ import annotations

import gc
from typing import Any

from fastapi import FastAPI, Request

from consumers.fanout.privacy import destination_report
from ledger.api.app import create_app as create_write_api
from ledger.api.deps import require, state_of
from ledger_app.console import install_console
from ledger_app.migrations import migration_sources
from ledger_app.reconcile.routes import make_router as reconcile_router
from ledger_kernel.settings import Settings
from projections.quarantine import stale_projections
from projections.routes import make_router


async def _reveal(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The read model's sealed personal fields, opened with the API's codec (when one is set)."""
    privacy = state_of(request).privacy
    return items if privacy is None else await privacy.codec.reveal(items)


def create_app(settings: Settings, *, console: dict[str, Any] | None = None, **wiring: Any) -> FastAPI:
    """`ledger.api.app.create_app` (same keyword wiring: pool, metrics, service) plus read-model
    and reconciliation routes and the web console under `/console` (`console`: keyword wiring of
    `install_console`).

    `/readyz` waits for every package's migrations, not only the write side's.
    """
    wiring.setdefault("migrations", migration_sources())
    app = create_write_api(
        settings,
        routers=[make_router(require, reveal=_reveal), reconcile_router(require)],
        stale_read_models=stale_projections,
        privacy_places=[destination_report],
        **wiring,
    )
    install_console(app, settings, **(console or {}))
    return app


def deployed_app(settings: Settings) -> FastAPI:
    """`create_app` for a server process: what start-up built is then frozen out of the GC's reach.

    The app, its modules and their tables are ~115k tracked objects that live as long as the
    process; every full collection walked them all (measured: 85 ms of CPU on the loaded
    2-core machine, a pause for every request in flight in that worker, straight into the
    p99). `gc.freeze` moves them to the permanent generation, so a full collection walks only
    what requests left alive (docs/performance.md#api). Only server processes do this: a test
    that builds many apps keeps collecting them.
    """
    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


def app_factory() -> FastAPI:
    """uvicorn `--factory` entry for multi-worker runs."""
    return deployed_app(Settings())

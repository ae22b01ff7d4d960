"""The web console under `/console`: orders, the audit feed and operations, for people.

Server-rendered (Jinja2 templates, htmx vendored as a static file: no front-end build). It lives
in the composition root because it shows the read side and the integrations together; every
figure it shows comes from the functions the API and the CLIs use (see `routes` and
`operations`). `install_console(app, settings)` mounts it on the API app (`ledger_app.api`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ledger.api.auth import TokenStore
from ledger_app.console.operations import (
    LagSampler,
    LatestReconciliation,
    Rebuilder,
    RebuildTracker,
)
from ledger_app.console.routes import HERE, PREFIX, ConsoleState, router
from ledger_app.console.session import SessionCodec
from ledger_app.reconcile import latest_report
from ledger_kernel.observability import get_logger
from ledger_kernel.settings import Settings
from projections import catalog
from projections.definition import Projection

__all__ = ["PREFIX", "install_console"]

log = get_logger(__name__)


def install_console(
    app: FastAPI,
    settings: Settings,
    *,
    projections: Mapping[str, Projection] | None = None,
    reconciliation: LatestReconciliation = latest_report,
    rebuilder: Rebuilder | None = None,
    redrive_options: Mapping[str, Any] | None = None,
    tokens: TokenStore | None = None,
) -> ConsoleState:
    """Mount the console's routes and static files, and sample lags while the app runs.

    `projections` defaults to this deploy's (`projections.catalog`); `redrive_options` are
    passed to `consumers.fanout.operations.redrive` (tests give an HTTP transport); `tokens`
    is where sessions look their token up (default: a `TokenStore` on the API's pool).
    """
    secret = settings.console.session_secret
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        enable_async=False,
    )
    console = ConsoleState(
        settings=settings,
        codec=SessionCodec(secret.get_secret_value() if secret else None, settings.console.session_max_age_s),
        env=env,
        projections=dict(projections if projections is not None else catalog.PROJECTIONS),
        sampler=LagSampler(settings.console.chart_interval_s),
        rebuilds=RebuildTracker(rebuilder) if rebuilder is not None else RebuildTracker(),
        reconciliation=reconciliation,
        extra=dict(redrive_options or {}),
        tokens=tokens,
    )
    app.state.console = console
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[Any]:
        async with inner(running) as state:
            app_state = state_of_app(running)
            task = None
            if app_state is not None and app_state.pool is not None:
                task = asyncio.get_running_loop().create_task(
                    console.sampler.run(
                        app_state.pool,
                        app_state.store,
                        settings.kafka.events_topic,
                        list(console.projections.values()),
                    )
                )
            try:
                yield state
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await console.rebuilds.aclose()
                await console.background.aclose()

    app.router.lifespan_context = lifespan
    return console


def state_of_app(app: FastAPI) -> Any:
    """The API's `AppState` once its lifespan built it (None before)."""
    return getattr(app.state, "ledger", None)


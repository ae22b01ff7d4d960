"""`/api/v3/reconciliations`: the last run with its mismatches (audit:read), and a new run (admin).

A run over a long log takes minutes, longer than a request may: `POST` begins the run, answers
202 with it, and reconciles in a task of the API process (one at a time per process; a second
`POST` meanwhile is 409). `GET .../latest` shows its progress and, once finished, its verdict.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from ledger.api.problems import Problem
from ledger.api.schemas import problem_responses
from ledger_app.reconcile.runner import ReconcileOptions, begin_run, run_reconciliation
from ledger_app.reconcile.runs import latest_report
from ledger_kernel.wire.codec import dumps

log = structlog.get_logger(__name__)
PATH = "/api/v3/reconciliations"


class MismatchView(BaseModel):
    kind: str
    place: str
    order_id: str
    detail: str


class RangeView(BaseModel):
    from_position: int
    to_position: int


class ReconciliationView(BaseModel):
    """`ReconcileReport.as_json()`: the run, its counts per place and its stored mismatches."""

    id: int
    started_at: str
    finished_at: str | None
    status: str
    ok: bool
    range: RangeView
    checked_through: int
    counts: dict[str, dict[str, int]]
    mismatch_count: int
    mismatches: list[MismatchView]
    error: str | None


class ReconciliationBody(BaseModel):
    data: ReconciliationView


def _documented(status: int, description: str, *problems: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ReconciliationBody, "description": description}, **problem_responses(*problems)}


def make_router(require_scope: Callable[[str], Callable[..., Any]]) -> APIRouter:
    router = APIRouter()
    running: set[asyncio.Task[Any]] = set()

    def pool_of(request: Request) -> asyncpg.Pool:
        pool: asyncpg.Pool | None = request.app.state.ledger.pool
        if pool is None:
            raise Problem(503, "unavailable", "reconciliation needs the database")
        return pool

    @router.get(
        f"{PATH}/latest",
        dependencies=[Depends(require_scope("audit:read"))],
        summary="The last reconciliation with its mismatches",
        response_class=Response,
        responses=_documented(200, "The newest run (running, finished or failed)", 404),
    )
    async def latest(request: Request) -> Response:
        report = await latest_report(pool_of(request))
        if report is None:
            raise Problem(404, "not-found", "no reconciliation has run yet")
        return Response(dumps({"data": report.as_json()}), media_type="application/json")

    @router.post(
        PATH,
        dependencies=[Depends(require_scope("admin"))],
        status_code=202,
        summary="Start a reconciliation of the whole log",
        response_class=Response,
        responses=_documented(202, "The run begun; follow it at .../latest", 409),
    )
    async def start(request: Request) -> Response:
        if running:
            raise Problem(
                409, "reconciliation-running", "a reconciliation is already running in this process"
            )
        pool = pool_of(request)
        state = request.app.state.ledger
        options = ReconcileOptions.from_settings(state.settings)
        run = await begin_run(pool, options)

        async def work() -> None:
            try:
                await run_reconciliation(pool, options, run=run, metrics=state.metrics)
            except Exception:
                log.exception("reconciliation failed", run_id=run.id)

        task = asyncio.get_running_loop().create_task(work())
        running.add(task)
        task.add_done_callback(running.discard)
        return Response(
            dumps({"data": run.as_json()}),
            status_code=202,
            media_type="application/json",
            headers={"Location": f"{PATH}/latest"},
        )

    return router

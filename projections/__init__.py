"""Projections: runners and versioned, blue/green read models (`order_state`, `transactions`).

Entry points: `Runner` / `run_projections` (live, exactly-once batches), `rebuild` (build a new
version beside the live one, verify, swap), `registry.rollback`, `status.projection_status`,
`queries` (list queries) and `routes.make_router` (FastAPI routes), `cli.app` (`ledger projections`).
"""

from projections.catalog import PROJECTIONS
from projections.definition import Column, Projection, Table
from projections.rebuild import RebuildReport, VerificationFailed, rebuild
from projections.registry import CodeChanged, NotBuilt, ProjectionError, RebuildRefused
from projections.runner import Runner, run_projections

__all__ = [
    "PROJECTIONS",
    "CodeChanged",
    "Column",
    "NotBuilt",
    "Projection",
    "ProjectionError",
    "RebuildRefused",
    "RebuildReport",
    "Runner",
    "Table",
    "VerificationFailed",
    "rebuild",
    "run_projections",
]

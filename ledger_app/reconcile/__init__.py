"""Reconciliation: proof that nothing was missed (issue #20, docs/reliability.md#reconcile).

The log is compared with (1) the `orders.events` topic, (2) each read model, (3) each
destination's delivery state. It needs the log, Kafka, the projections and the fan-out, so it
lives in the composition root. The CLI (`ledger audit reconcile`), the API routes
(`/api/v3/reconciliations`) and the console all call these functions:

- `run_reconciliation(pool, options, ...) -> ReconcileReport`
- `latest_report(pool) -> ReconcileReport | None`
"""

from ledger_app.reconcile.report import KINDS, Mismatch, ReconcileReport
from ledger_app.reconcile.runner import ReconcileOptions, begin_run, observe, run_reconciliation
from ledger_app.reconcile.runs import latest_report

__all__ = [
    "KINDS",
    "Mismatch",
    "ReconcileOptions",
    "ReconcileReport",
    "begin_run",
    "latest_report",
    "observe",
    "run_reconciliation",
]

"""Logging, metrics and health endpoints shared by every process."""

from ledger_kernel.observability.health import Readiness, serve_ops
from ledger_kernel.observability.logs import configure_logging, get_logger
from ledger_kernel.observability.metrics import METRICS, Metrics, serve_metrics

__all__ = ["METRICS", "Metrics", "Readiness", "configure_logging", "get_logger", "serve_metrics", "serve_ops"]

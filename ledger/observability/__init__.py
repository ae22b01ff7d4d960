"""Logging and metrics shared by every process."""

from ledger.observability.health import Readiness, serve_ops
from ledger.observability.logs import configure_logging, get_logger
from ledger.observability.metrics import METRICS, Metrics, serve_metrics

__all__ = ["METRICS", "Metrics", "Readiness", "configure_logging", "get_logger", "serve_metrics", "serve_ops"]

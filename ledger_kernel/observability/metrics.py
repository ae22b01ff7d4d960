"""Prometheus metrics of the whole service, defined once so names never drift between processes.

Each process exposes the registry: the API at `/metrics`, the other processes on
`--metrics-port` through `serve_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


@dataclass
class Metrics:
    """All ledger metrics on one registry (tests build their own to stay isolated)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.append_seconds = Histogram(
            "ledger_append_seconds",
            "Event store append latency",
            ["outcome"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.appended_events = Counter("ledger_appended_events_total", "Events appended", registry=r)
        self.fence_lag_seconds = Gauge(
            "ledger_fence_lag_seconds",
            "Age of the oldest open write transaction holding the xid8 fence",
            registry=r,
        )
        self.relay_lag_events = Gauge(
            "ledger_relay_lag_events", "Committed events not yet published", registry=r
        )
        self.relay_lag_seconds = Gauge(
            "ledger_relay_lag_seconds", "Age of the oldest committed, unpublished event", registry=r
        )
        self.relay_published = Counter(
            "ledger_relay_published_total", "Events published on Kafka", registry=r
        )
        self.relay_broker_errors = Counter(
            "ledger_relay_broker_errors_total", "Broker errors seen by the relay", ["kind"], registry=r
        )
        self.relay_broker_data_lost = Gauge(
            "ledger_relay_broker_data_lost",
            "1 while the relay holds because the broker lost records it had acknowledged (by reason)",
            ["reason"],
            registry=r,
        )
        self.projection_lag_events = Gauge(
            "ledger_projection_lag_events", "Events behind the log head", ["projection"], registry=r
        )
        self.projection_applied = Counter(
            "ledger_projection_applied_total", "Events applied", ["projection"], registry=r
        )
        self.projection_quarantined_orders = Gauge(
            "ledger_projection_quarantined_orders",
            "Orders a projection's running version could not apply (their rows are stale)",
            ["projection"],
            registry=r,
        )
        self.worker_lag_seconds = Gauge(
            "ledger_worker_lag_seconds",
            "Age of the event a worker is delivering",
            ["destination"],
            registry=r,
        )
        self.parked_orders = Gauge(
            "ledger_parked_orders", "Orders parked per destination", ["destination"], registry=r
        )
        self.outbound_calls = Counter(
            "ledger_outbound_calls_total", "Calls to destinations", ["destination", "status"], registry=r
        )
        self.not_applicable_events = Counter(
            "ledger_fanout_not_applicable_total",
            "Events recorded as not applicable to a destination (it cannot take the order), not parked",
            ["destination", "reason"],
            registry=r,
        )
        self.fanout_halted = Gauge(
            "ledger_fanout_halted",
            "1 while a destination is halted (401/403) until an operator resumes it",
            ["destination"],
            registry=r,
        )
        self.dropped_fields = Counter(
            "ledger_fanout_dropped_fields_total",
            "Fields left out of a destination call because their value was unusable (e.g. a phone"
            " that cannot be made E.164)",
            ["destination", "field"],
            registry=r,
        )
        self.reconcile_mismatches = Gauge(
            "ledger_reconcile_mismatches",
            "Mismatches the last reconciliation found, per place (kafka:<topic>, projection:<name>,"
            " destination:<name>)",
            ["place"],
            registry=r,
        )
        self.reconcile_last_run = Gauge(
            "ledger_reconcile_last_run_timestamp_seconds",
            "When the last reconciliation finished (Unix time)",
            registry=r,
        )
        self.intake_commands = Counter(
            "ledger_intake_commands_total", "Kafka intake commands", ["outcome"], registry=r
        )
        self.http_requests = Counter(
            "ledger_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )

    def observe_append(self, seconds: float, appended: int, outcome: str) -> None:
        """The event store's append hook: latency by outcome, and events appended."""
        self.append_seconds.labels(outcome).observe(seconds)
        if appended:
            self.appended_events.inc(appended)


METRICS = Metrics()
"""The process-wide registry used by the CLI verbs; tests pass their own `Metrics()`."""


def serve_metrics(port: int, metrics: Metrics = METRICS) -> None:
    """Expose the registry on a side port (processes without an HTTP server of their own)."""
    start_http_server(port, registry=metrics.registry)

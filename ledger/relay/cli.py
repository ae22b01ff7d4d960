"""The `ledger relay` verb and `python -m ledger.relay`: one relay process.

SIGTERM and SIGINT set the stop event: the batch in flight is finished (acknowledged and
checkpointed) and the process exits 0. A second signal is not needed and not special.
"""

from __future__ import annotations

import asyncio
import signal

import typer

from ledger.relay.relay import run_relay, tune_gc
from ledger_kernel.observability import METRICS, configure_logging, get_logger, serve_metrics
from ledger_kernel.settings import Settings

_log = get_logger(__name__)


async def serve(settings: Settings, *, topic: str | None = None) -> None:
    """Run the relay with signal handling until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_relay(settings, stop=stop, metrics=METRICS, topic=topic)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    _log.info("relay.stopped")


def relay(
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Expose Prometheus metrics on this port (default: settings.relay)."
    ),
    topic: str | None = typer.Option(
        None, "--topic", help="Topic to publish on (default: kafka.events_topic)."
    ),
) -> None:
    """Publish the event log on Kafka (at-least-once, in log order, key = order id)."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    port = metrics_port if metrics_port is not None else settings.relay.metrics_port
    if port is not None:
        serve_metrics(port, METRICS)
    tune_gc()
    asyncio.run(serve(settings, topic=topic))


def main() -> None:
    """`python -m ledger.relay [--metrics-port N] [--topic T]`."""
    typer.run(relay)

"""The `ledger relay` verbs and `python -m ledger.relay`: one relay process, and `republish`.

SIGTERM and SIGINT set the stop event: the batch in flight is finished (acknowledged and
checkpointed) and the process exits 0. A second signal is not needed and not special.

The metrics port also answers `/healthz` and `/readyz`: not ready (503, reasons as JSON) while
the relay is not connected to the broker or holds because the broker lost data.

`--exactly-once` (or `LEDGER_RELAY__EXACTLY_ONCE=true`): each publish is one Kafka transaction with
the relay's checkpoint (`ledger.relay.eos`). On a broker without transactions (Tansu) the relay
stops at start-up with one line on stderr and exit code 78 (EX_CONFIG, as `ledger_app.cli_errors`
uses for settings), never downgrading to at-least-once by itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import datetime
from typing import Annotated

import typer

from ledger.relay.eos import ExactlyOnceUnsupported
from ledger.relay.relay import run_relay, tune_gc
from ledger_kernel.observability import METRICS, Readiness, configure_logging, get_logger, serve_ops
from ledger_kernel.settings import Settings

_log = get_logger(__name__)


async def serve(settings: Settings, *, topic: str | None = None, readiness: Readiness | None = None) -> None:
    """Run the relay with signal handling until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_relay(settings, stop=stop, metrics=METRICS, topic=topic, readiness=readiness)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    _log.info("relay.stopped")


def relay(
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        help="Expose Prometheus metrics, /healthz and /readyz on this port (default: settings.relay).",
    ),
    topic: str | None = typer.Option(
        None, "--topic", help="Topic to publish on (default: kafka.events_topic)."
    ),
    exactly_once: bool = typer.Option(
        False,
        "--exactly-once",
        help="One Kafka transaction per publish, with the relay's checkpoint (needs Apache Kafka;"
        " default: settings.relay.exactly_once).",
    ),
) -> None:
    """Publish the event log on Kafka (at-least-once or exactly-once, in log order, key = order id)."""
    settings = Settings()
    if exactly_once:
        settings.relay.exactly_once = True
    configure_logging(settings.log_level, settings.log_json)
    readiness = Readiness(broker="connecting to the broker")
    port = metrics_port if metrics_port is not None else settings.relay.metrics_port
    if port is not None:
        serve_ops(port, METRICS, readiness)
    tune_gc()
    try:
        asyncio.run(serve(settings, topic=topic, readiness=readiness))
    except ExactlyOnceUnsupported as exc:
        _log.error("relay.exactly_once_unsupported", error=str(exc))
        print(f"ledger: exactly-once publication refused: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(os.EX_CONFIG) from None


relay_app = typer.Typer(
    help="Publish the event log on Kafka (at-least-once, or --exactly-once on Apache Kafka; in log order,"
    " key = order id); `republish` a range.",
    no_args_is_help=False,
)


@relay_app.callback(invoke_without_command=True)
def relay_group(
    ctx: typer.Context,
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        help="Expose Prometheus metrics, /healthz and /readyz on this port (default: settings.relay).",
    ),
    topic: str | None = typer.Option(
        None, "--topic", help="Topic to publish on (default: kafka.events_topic)."
    ),
    exactly_once: bool = typer.Option(
        False,
        "--exactly-once",
        help="One Kafka transaction per publish, with the relay's checkpoint (needs Apache Kafka;"
        " default: settings.relay.exactly_once).",
    ),
) -> None:
    """Without a sub-command: run the relay (`ledger relay [--metrics-port N] [--topic T] [--exactly-once]`)."""
    if ctx.invoked_subcommand is None:
        relay(metrics_port=metrics_port, topic=topic, exactly_once=exactly_once)


@relay_app.command()
def republish(
    from_position: Annotated[
        int | None, typer.Option("--from-position", help="Re-publish events at this log position and after.")
    ] = None,
    from_time: Annotated[
        datetime | None,
        typer.Option(
            "--from-time",
            help="Re-publish events recorded at this time and after (ISO 8601; without an offset: UTC).",
        ),
    ] = None,
    topic: Annotated[str | None, typer.Option("--topic", help="Default: kafka.events_topic.")] = None,
) -> None:
    """Re-publish a range of the log to Kafka, up to the relay's checkpoint (the log is the truth).

    Creates the topic if missing (configured partitions), sends the events in log order, then
    saves what the broker holds as the relay's acknowledged offsets: a relay holding because the
    broker lost data resumes after the re-published range. Consumers dedupe by event id.
    """
    from datetime import UTC

    from ledger.relay.publisher import RelayConfigError
    from ledger.relay.republish import republish as run

    if from_position is None and from_time is None:
        typer.echo("say where to start: --from-position P (0: the whole log) or --from-time T", err=True)
        raise typer.Exit(2)
    if from_time is not None and from_time.tzinfo is None:
        from_time = from_time.replace(tzinfo=UTC)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    try:
        result = asyncio.run(run(settings, from_position=from_position, from_time=from_time, topic=topic))
    except RelayConfigError as exc:  # the topic has another partition count: an operator decision
        typer.echo(f"republish refused: {exc}", err=True)
        raise typer.Exit(2) from None
    if result.upto is None:
        typer.echo("the relay has published nothing yet: nothing to re-publish (the relay will publish it)")
        return
    typer.echo(
        f"re-published {result.events} event(s) of {result.scanned} up to position {result.upto.position}"
        f" on {topic or settings.kafka.events_topic}; broker end offsets now {result.ends}"
    )


def main() -> None:
    """`python -m ledger.relay [--metrics-port N] [--topic T] [--exactly-once]`."""
    typer.run(relay)

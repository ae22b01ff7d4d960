"""`ledger audit reconcile`: the log against the topic, every read model and every destination."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from ledger.store import create_pool
from ledger_app.reconcile.report import Mismatch, ReconcileReport
from ledger_app.reconcile.runner import ReconcileOptions, run_reconciliation
from ledger_kernel.observability import configure_logging
from ledger_kernel.observability.metrics import METRICS, serve_metrics
from ledger_kernel.settings import Settings


def reconcile(  # noqa: PLR0917 - typer passes every option by name
    from_position: Annotated[
        int | None, typer.Option("--from-position", help="First log position to check (default: the first).")
    ] = None,
    to_position: Annotated[
        int | None,
        typer.Option("--to-position", help="Last log position to check (default: the fenced head)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the last run where it stopped; after a finished one, check what was appended since.",
        ),
    ] = False,
    every: Annotated[
        float | None,
        typer.Option(
            "--every", help="Run again every SECONDS (until stopped); with --resume, incrementally."
        ),
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Topic to compare (default: settings' events topic).")
    ] = None,
    chunk: Annotated[int, typer.Option(help="Log positions checked per chunk (bounds memory).")] = 20_000,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve the reconciliation gauges on this port.")
    ] = None,
) -> None:
    """Compare the log with the Kafka topic, each read model and each destination's delivery state.

    Prints every mismatch and exits 1 on any (0 when everything agrees).
    """
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    overrides: dict[str, object] = {
        "from_position": from_position,
        "to_position": to_position,
        "chunk_events": chunk,
    }
    if topic is not None:
        overrides["topic"] = topic
    options = ReconcileOptions.from_settings(settings, **overrides)
    if metrics_port is not None:
        serve_metrics(metrics_port, METRICS)

    def show(mismatch: Mismatch) -> None:
        typer.echo(mismatch.line())

    async def once() -> ReconcileReport:
        pool = await create_pool(settings.database_url, settings.store, application_name="ledger-reconcile")
        try:
            return await run_reconciliation(pool, options, resume=resume, on_mismatch=show, metrics=METRICS)
        finally:
            await pool.close()

    if every is not None:
        asyncio.run(_every(every, once))
        raise typer.Exit(0)
    report = asyncio.run(once())
    print_summary(report)
    raise typer.Exit(0 if report.ok else 1)


async def _every(seconds: float, once: Callable[[], Awaitable[ReconcileReport]]) -> None:
    """Run, wait `seconds`, run again, until SIGTERM or SIGINT: then stop at once, exit 0.

    Why handle the signals: killed by them, the process died mid-sleep with no exit status of
    its own (or a KeyboardInterrupt traceback). A run under way is cancelled; it records itself
    as failed, and `--resume` continues it from its last saved chunk.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            run = asyncio.ensure_future(once())
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                break
            print_summary(run.result())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), seconds)
    finally:
        stopping.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    typer.echo("reconciliation stopped")


def print_summary(report: ReconcileReport) -> None:
    typer.echo(
        f"reconciliation {report.id}: positions {report.from_position}..{report.to_position},"
        f" {report.status}, {report.mismatch_count} mismatch(es)"
    )
    for place, figures in sorted(report.counts.items()):
        typer.echo(f"  {place}: " + ", ".join(f"{name} {value}" for name, value in sorted(figures.items())))

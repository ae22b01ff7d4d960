"""Typer commands of the Kafka intake: `intake` (the consumer process) and `asyncapi` (its document).

The root mounts them on the `ledger` CLI; each builds `Settings()` once (the only place the
environment is read) and hands it to the intake's composition root.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from ledger_kernel.settings import Settings


def intake(
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """Consume `orders.intake` and run the commands (Ctrl-C or SIGTERM stops it cleanly)."""
    from ledger.intake import Intake
    from ledger_kernel.observability import METRICS, configure_logging, serve_metrics

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if metrics_port:
        serve_metrics(metrics_port, METRICS)
    asyncio.run(Intake(settings, metrics=METRICS).app.run())


def asyncapi(
    out: Annotated[Path, typer.Option(help="Where to write the document")] = Path("docs/asyncapi.json"),
) -> None:
    """Write the AsyncAPI document of the Kafka interface (generated from the FastStream app)."""
    from ledger.intake import asyncapi_document

    out.write_text(
        json.dumps(asyncapi_document(Settings()), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    typer.echo(f"wrote {out}")


if __name__ == "__main__":
    cli = typer.Typer()
    cli.command()(intake)
    cli.command()(asyncapi)
    cli()

"""`ledger`: one CLI, one verb per process (DESIGN §9).

Each verb builds `Settings` once (environment `LEDGER_*`, `.env`) and hands it to its package's
composition root; nothing else reads the environment. Typer has no async commands, so every verb
wraps its work in `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import sys
from enum import Enum
from pathlib import Path

import typer

from ledger.observability import configure_logging
from ledger.settings import Settings

app = typer.Typer(
    name="ledger",
    help="Event-sourced order ledger: store, API, relay, projections and fan-out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


class Vendor(str, Enum):
    omneo = "omneo"
    omnisend = "omnisend"


@app.command()
def migrate() -> None:
    """Apply the SQL migrations (idempotent, under an advisory lock, checksums verified)."""
    from ledger.store.migrate import migrate as run

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    applied = asyncio.run(run(settings.database_url))
    typer.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))


@app.command()
def dev(
    home: Path = typer.Option(Path(".ledger"), help="Where data, logs and dev.env live."),
    api_port: int = typer.Option(8000, help="API port (another free port is taken if busy)."),
) -> None:
    """Run the whole system on embedded defaults: PostgreSQL, Kafka, sandboxes and every process."""
    from ledger.dev.stack import run_dev

    raise typer.Exit(run_dev(home.resolve(), api_port, typer.echo))


@app.command()
def demo(
    env_file: Path = typer.Option(Path(".ledger/dev.env"), help="Written by `ledger dev`."),
    timeout: float = typer.Option(60.0, help="Seconds to wait for the fan-out to finish."),
) -> None:
    """Drive a split-shipment checkout story through the running stack, printing curl for each step."""
    from ledger.dev.demo import DemoError, run_demo

    try:
        result = run_demo(env_file, typer.echo, timeout)
    except DemoError as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"\ndone: order {result['order_id']} ({result['external_id']}) reached both destinations.")


@app.command()
def sandbox(
    vendor: Vendor = typer.Argument(..., help="Which API to imitate."),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(0, help="Default 8081 (omneo) or 8082 (omnisend)."),
    token: str | None = typer.Option(None, help="Bearer token (Omneo) or X-API-KEY (Omnisend) to accept."),
) -> None:
    """Serve a faithful local sandbox of Omneo or Omnisend (request log, state, fault injection)."""
    from consumers.sandbox import serve

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    asyncio.run(serve(vendor.value, host, port, token))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())

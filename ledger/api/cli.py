"""Typer commands of the API side: `api`, `intake`, `tokens create`, `asyncapi`.

The coordinator mounts them on the main `ledger` CLI; each builds `Settings()` once (the only
place the environment is read) and hands it to the composition roots.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from ledger.settings import Settings

tokens_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)


def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings.api.port)")] = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from ledger.api.headers import server_options
    from ledger.observability import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    bind_host = host or settings.api.host
    bind_port = port or settings.api.port
    if workers > 1:
        uvicorn.run(
            "ledger.api.cli:app_factory",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=workers,
            log_config=None,
            access_log=False,
            **server_options(),
        )
        return
    from ledger.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=bind_host,
        port=bind_port,
        log_config=None,
        access_log=False,
        **server_options(),
    )


def app_factory() -> object:
    """uvicorn `--factory` entry for multi-worker runs."""
    from ledger.api.app import create_app

    return create_app(Settings())


def intake(
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """Consume `orders.intake` and run the commands (Ctrl-C or SIGTERM stops it cleanly)."""
    from ledger.intake import Intake
    from ledger.observability import METRICS, configure_logging, serve_metrics

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if metrics_port:
        serve_metrics(metrics_port, METRICS)
    asyncio.run(Intake(settings, metrics=METRICS).app.run())


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Principal name, recorded as the actor of every event")],
    scope: Annotated[
        list[str], typer.Option(help="orders:write, orders:read, audit:read or admin (repeatable)")
    ],
    client_id: Annotated[str | None, typer.Option(help="Idempotency-key scope (default: the name)")] = None,
) -> None:
    """Create a token and print it once (only its SHA-256 is stored)."""
    from ledger.api.auth import TokenStore
    from ledger.store import create_pool

    settings = Settings()

    async def run() -> str:
        pool = await create_pool(settings.database_url, settings.store, min_size=1, max_size=1)
        try:
            token, _ = await TokenStore(pool).create(name, scope, client_id)
        finally:
            await pool.close()
        return token

    try:
        token = asyncio.run(run())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(token)


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
    cli.command()(api)
    cli.command()(intake)
    cli.command()(asyncapi)
    cli.add_typer(tokens_app, name="tokens")
    cli()

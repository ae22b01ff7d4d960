"""Typer commands of the API side: `tokens create` (`api` is the root's: it mounts the read models).

The coordinator mounts them on the main `ledger` CLI; each builds `Settings()` once (the only
place the environment is read) and hands it to the composition roots.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ledger_kernel.settings import Settings

tokens_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)


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


if __name__ == "__main__":
    cli = typer.Typer()
    cli.add_typer(tokens_app, name="tokens")
    cli()

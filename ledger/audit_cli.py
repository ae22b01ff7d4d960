"""`ledger audit ORDER_ID` and `ledger audit verify`: the auditor's questions from a terminal.

"Who changed what, and what did the order look like then" is the order's history (version, time,
actor, source, event) and its state folded up to a version or a time; "has anyone edited the
log" is the per-order hash chain, recomputed from the stored rows.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Annotated
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from ledger.privacy.setup import pg_codec
from ledger.store import RecordedEvent, create_pool
from ledger.store.chain import verify_stream
from ledger_kernel.settings import Settings
from ledger_kernel.wire.streams import stream_id_of

app = typer.Typer(help="Audit: an order's history and state as of a time; hash-chain verification.")
console = Console()


@app.command("history")
def history(
    order_id: Annotated[UUID, typer.Argument(help="The ledger order id.")],
    at: Annotated[
        datetime | None, typer.Option(help="Show the state as it was at this time (RFC 3339).")
    ] = None,
    version: Annotated[int | None, typer.Option(help="Show the state as it was at this version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print who changed what (every event with its actor), and the order as of a version or time."""
    from ledger.domain import order_to_json
    from ledger.repository import ConnectionReader, fold_events

    async def run() -> tuple[list[RecordedEvent], dict[str, object] | None]:
        settings = Settings()
        pool = await create_pool(settings.database_url, min_size=1, max_size=1)
        try:
            rows = await ConnectionReader(pool).read_stream(stream_id_of(order_id))
            codec = pg_codec(pool, settings.privacy)
            if codec is not None:  # personal fields open with their key (None once erased)
                rows = await codec.decode(rows)
        finally:
            await pool.close()
        chosen = [
            r
            for r in rows
            if (version is None or r.version <= version) and (at is None or r.recorded_at <= at)
        ]
        folded = fold_events(chosen)
        return rows, None if folded is None else order_to_json(folded)

    rows, state = asyncio.run(run())
    if not rows:
        console.print(f"[red]no order {order_id}[/red]")
        raise typer.Exit(1)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "history": [
                        {
                            "version": r.version,
                            "position": r.position,
                            "type": r.type,
                            "recorded_at": r.recorded_at.isoformat(),
                            "metadata": r.metadata,
                        }
                        for r in rows
                    ],
                    "state": state,
                },
                default=str,
            )
        )
        return
    table = Table(title=f"order {order_id}")
    for column in ("version", "recorded at", "type", "actor", "source", "request"):
        table.add_column(column)
    for r in rows:
        meta = r.metadata
        table.add_row(
            str(r.version),
            r.recorded_at.isoformat(timespec="milliseconds"),
            r.type,
            str(meta.get("actor", "")),
            str(meta.get("source", "")),
            str(meta.get("request_id", "")),
        )
    console.print(table)
    if state is not None and (at is not None or version is not None):
        console.print_json(json.dumps(state, default=str))


@app.command("verify")
def verify(
    order_id: Annotated[UUID | None, typer.Argument(help="One order; default: every order.")] = None,
) -> None:
    """Recompute the per-order hash chains; exit 1 naming the first broken version of any order."""

    async def run() -> list[tuple[str, int, bool, int | None, str | None]]:
        pool = await create_pool(Settings().database_url, min_size=1, max_size=2)
        try:
            if order_id is not None:
                streams = [stream_id_of(order_id)]
            else:
                streams = [r["stream_id"] for r in await pool.fetch("SELECT DISTINCT stream_id FROM events")]
            out = []
            for stream in streams:
                result = await verify_stream(pool, stream)
                out.append((stream, result.checked, result.ok, result.broken_at_version, result.reason))
            return out
        finally:
            await pool.close()

    results = asyncio.run(run())
    broken = [r for r in results if not r[2]]
    for stream, _checked, _ok, at_version, reason in broken:
        console.print(f"[red]{stream}: broken at version {at_version}: {reason}[/red]")
    console.print(
        f"verified {len(results)} stream(s), {sum(r[1] for r in results)} event(s); {len(broken)} broken"
    )
    if broken or not results:
        raise typer.Exit(1)

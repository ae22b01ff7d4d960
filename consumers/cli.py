"""`ledger fanout ...`: run a worker, list parked orders, redrive them, replay after a fix, status.

A typer sub-app; the coordinator mounts it with `app.add_typer(fanout_app, name="fanout")`.
Exit codes: 0 ok, 1 something is still parked / failed, 2 usage, 3 destination halted (401/403).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ledger_kernel.observability import configure_logging
from ledger_kernel.settings import Settings

__all__ = ["app"]

app = typer.Typer(name="fanout", help="Fan-out workers to Omneo and Omnisend.", no_args_is_help=True)
console = Console()
T = TypeVar("T")

Destination = Annotated[str, typer.Option("--destination", "-d", help="omneo or omnisend")]


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return settings


def _with_pool(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        from ledger.store.pool import create_pool

        pool = await create_pool(settings.database_url, settings.store, application_name="ledger-fanout-cli")
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def _check_destination(name: str | None) -> None:
    if name is not None and name not in ("omneo", "omnisend"):
        raise typer.BadParameter("destination must be omneo or omnisend")


@app.command()
def run(
    destination: Annotated[str, typer.Argument(help="omneo or omnisend")],
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Prometheus port")] = None,
) -> None:
    """Run one destination's worker until SIGTERM/Ctrl-C (exit 3 if the destination refuses our credentials)."""
    _check_destination(destination)
    from consumers.fanout.worker import main

    raise typer.Exit(main(destination, _settings(), metrics_port=metrics_port))


@app.command()
def parked(
    destination: Destination | None = None,
    order: Annotated[str | None, typer.Option("--order", help="one order id")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List parked orders with the reason, and halted destinations."""
    _check_destination(destination)
    from consumers.fanout.delivery_store import list_halts, list_parked

    async def work(pool: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await list_parked(pool, destination, order), await list_halts(pool)

    rows, halts = _with_pool(_settings(), work)
    if as_json:
        typer.echo(json.dumps({"parked": rows, "halted": halts}, default=str, indent=2))
        return
    console.print("(Orders a destination cannot take are not parked: `ledger fanout status`.)")
    for halt in halts:
        console.print(
            f"[red]HALTED[/red] {halt['destination']}: {halt['reason']} (since {halt['halted_at']})"
        )
    if not rows:
        console.print("No parked orders.")
        return
    table = Table("destination", "order", "waiting", "version", "reason", "attempts", "parked at")
    for r in rows:
        detail = f"\n{json.dumps(r['detail'], default=str)[:200]}" if r["detail"] else ""
        table.add_row(
            r["destination"],
            r["order_id"],
            str(r["waiting"]),
            str(r["version"]),
            r["reason"] + detail,
            str(r["attempts"]),
            str(r["parked_at"]),
        )
    console.print(table)


@app.command()
def status(
    destination: Destination | None = None,
    order: Annotated[str | None, typer.Option("--order", help="one order's delivery state")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per destination: orders, parked, not applicable (cannot take them, with why), halted;
    with --order, that order's delivery state at each destination."""
    _check_destination(destination)
    from consumers.fanout.delivery_store import delivery_summary, list_not_applicable, order_delivery

    async def work(pool: Any) -> dict[str, Any]:
        if order is not None:
            states = await order_delivery(pool, order)
            return {
                "order": order,
                "destinations": [s for s in states if destination in (None, s["destination"])],
            }
        return {
            "destinations": [
                s for s in await delivery_summary(pool) if destination in (None, s["destination"])
            ],
            "not_applicable": await list_not_applicable(pool, destination),
        }

    out = _with_pool(_settings(), work)
    if as_json:
        typer.echo(json.dumps(out, default=str, indent=2))
        return
    if order is not None:
        table = Table("destination", "delivered up to", "destination has it", "not applicable", "parked")
        for s in out["destinations"]:
            table.add_row(
                s["destination"],
                "-" if s["version"] is None else f"v{s['version']}",
                "yes" if s["remote_exists"] else "no",
                s["not_applicable"] or "-",
                s["parked"] or "-",
            )
        console.print(table)
        return
    table = Table("destination", "orders", "parked", "not applicable", "halted")
    for s in out["destinations"]:
        table.add_row(
            s["destination"], str(s["orders"]), str(s["parked"]), str(s["not_applicable"]), s["halted"] or "-"
        )
    console.print(table)
    if out["not_applicable"]:
        listing = Table("destination", "order", "version", "why not applicable", "updated")
        for r in out["not_applicable"][:50]:
            listing.add_row(
                r["destination"], r["order_id"], str(r["version"]), r["reason"], str(r["updated_at"])
            )
        console.print(listing)


@app.command()
def resume(destination: Destination) -> None:
    """Lift a destination's halt (after fixing its credentials): its worker starts consuming again."""
    _check_destination(destination)
    from consumers.fanout.delivery_store import FanoutStore

    async def work(pool: Any) -> Any:
        return await FanoutStore(pool, str(destination)).clear_halt()

    previous = _with_pool(_settings(), work)
    if previous is None:
        console.print(f"{destination} was not halted.")
        return
    console.print(f"{destination} resumed (halted since {previous['halted_at']}: {previous['reason']}).")


@app.command()
def redrive(
    destination: Destination | None = None,
    order: Annotated[str | None, typer.Option("--order", help="one order id")] = None,
    drop_unreadable: Annotated[
        bool, typer.Option("--drop-unreadable", help="discard parked envelopes that cannot be parsed")
    ] = False,
) -> None:
    """Retry parked orders after a fix, each order's events in order."""
    _check_destination(destination)
    from consumers.fanout.operations import redrive as do_redrive

    settings = _settings()
    results = _with_pool(
        settings,
        lambda pool: do_redrive(
            settings, pool, destination=destination, order_id=order, drop_unreadable=drop_unreadable
        ),
    )
    if not results:
        console.print("Nothing parked.")
        return
    for r in results:
        state = "[green]delivered[/green]" if r.stopped is None else f"[red]still parked[/red]: {r.stopped}"
        console.print(f"{r.destination} {r.order_id}: {r.delivered} event(s) delivered; {state}")
    if any(r.stopped for r in results):
        raise typer.Exit(1)


@app.command()
def replay(
    destination: Annotated[str, typer.Option("--destination", "-d", help="omneo or omnisend")],
    order: Annotated[str | None, typer.Option("--order", help="one order id")] = None,
    from_position: Annotated[
        int | None, typer.Option("--from-position", help="every order with an event at >= P")
    ] = None,
) -> None:
    """Re-send orders to a destination from the Postgres log (after a mapping bug fix), ignoring the inbox."""
    _check_destination(destination)
    if (order is None) == (from_position is None):
        raise typer.BadParameter("give exactly one of --order or --from-position")
    from consumers.fanout.operations import replay as do_replay

    settings = _settings()
    summary = _with_pool(
        settings,
        lambda pool: do_replay(
            settings, pool, destination=destination, order_id=order, from_position=from_position
        ),
    )
    console.print(
        f"replayed {summary['orders']} order(s) to {destination} with {summary['calls']} call(s);"
        f" {summary['skipped_parked']} parked order(s) skipped (redrive them first)"
    )

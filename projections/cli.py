"""`ledger projections run|rebuild|rollback|status|quarantine|refold` (a typer sub-app the `ledger` CLI mounts).

Exit codes: 0 done; 1 verification refused the swap; 2 the deploy is refused (changed code
under an unchanged version, version not built, nothing to roll back), with the message saying
what to do. Typer has no async commands, so each command wraps one `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from ledger.store.pool import create_pool
from ledger_kernel.observability.logs import configure_logging
from ledger_kernel.observability.metrics import METRICS, serve_metrics
from ledger_kernel.settings import Settings
from ledger_kernel.wire.streams import order_id_of, stream_id_of
from projections import catalog, quarantine, registry, setup
from projections.connect import open_pool
from projections.db import connection
from projections.rebuild import VerificationFailed, rebuild
from projections.runner import run_projections
from projections.status import projection_status

app = typer.Typer(help="Projection runners and blue/green rebuilds of the read models.", no_args_is_help=True)
console = Console(stderr=True)
T = TypeVar("T")

DatabaseUrl = Annotated[str | None, typer.Option(help="PostgreSQL URL (default: LEDGER_DATABASE_URL).")]


def _settings(database_url: str | None) -> Settings:
    settings = Settings()
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    return settings


async def _with_pool(
    settings: Settings, role: str, work: Callable[[asyncpg.Pool], Awaitable[T]], *, wait: bool = False
) -> T:
    """Run `work` with a pool; `wait`: a long-running command waits for the database to answer."""
    name = f"ledger-projections-{role}"
    if wait:
        pool = await open_pool(settings.database_url, settings.store, application_name=name)
    else:
        pool = await create_pool(settings.database_url, settings.store, application_name=name)
    try:
        return await work(pool)
    finally:
        await pool.close()


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(_stopped_by_sigterm(coro))
    except asyncio.CancelledError:
        console.print("[yellow]stopped[/yellow] (SIGTERM)")
        raise typer.Exit(143) from None
    except registry.ProjectionError as exc:
        if isinstance(exc, VerificationFailed):
            console.print(f"[red]verification failed:[/red] {exc}")
            raise typer.Exit(1) from None
        console.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(2) from None
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(2) from None


async def _stopped_by_sigterm(coro: Awaitable[T]) -> T:
    """SIGTERM cancels the command as Ctrl-C does, so its cleanup runs: a rebuild's worker
    processes are stopped and its lock released instead of dying with them still writing."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@app.command()
def run(
    names: Annotated[list[str] | None, typer.Argument(help="Projections to run (default: all).")] = None,
    database_url: DatabaseUrl = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    build_missing: Annotated[
        bool,
        typer.Option(
            help="First rebuild (verify, swap) a projection whose deployed version is not built yet,"
            " instead of refusing to start; the dev stack uses it after an upgrade."
        ),
    ] = False,
) -> None:
    """Run projection runners (standby while another instance of a version is active)."""
    settings = _settings(database_url)
    configure_logging(settings.log_level, settings.log_json)
    projections = [catalog.get(n) for n in names] if names else list(catalog.PROJECTIONS.values())
    port = metrics_port or settings.projections.metrics_port
    if port:
        serve_metrics(port, METRICS)

    async def main(pool: asyncpg.Pool) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if build_missing:
            building = asyncio.ensure_future(
                setup.build_missing(
                    pool,
                    projections,
                    dsn=settings.database_url,
                    workers=os.cpu_count() or 1,
                    page_size=settings.projections.rebuild_page_size,
                    batch_size=settings.projections.batch_size,
                )
            )
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((building, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not building.done():  # stopped mid-build: its cleanup stops the workers
                building.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await building
                return
            for report in building.result():
                console.print(
                    f"{report.projection} v{report.version} built and swapped ({report.orders:,} orders)"
                )
        await run_projections(pool, projections, batch_size=settings.projections.batch_size, stop=stop)

    _run(_with_pool(settings, "run", main, wait=True))


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="cyan")


class _RichSink:
    """Rebuild progress as a rich bar: events (bulk) or rows read back (verify) per second, and ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def phase(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            done = self.progress.tasks[-1]
            finished = done.total if done.total is not None else 1
            self.progress.update(self.task, total=finished, completed=finished)
            self.progress.stop_task(self.task)
        unit = "events" if name == "bulk" else "rows" if name == "verify" else ""
        self.task = self.progress.add_task(f"{name} {unit}".strip(), total=total)

    def advance(self, events: int, total: int | None = None) -> None:
        if total is not None:
            self.progress.update(self.task, total=total)
        self.progress.advance(self.task, events)


@app.command(name="rebuild")
def rebuild_command(
    name: Annotated[str, typer.Argument(help="Projection to rebuild (e.g. order_state).")],
    database_url: DatabaseUrl = None,
    *,
    page_size: Annotated[int | None, typer.Option(help="Events per bulk page.")] = None,
    workers: Annotated[
        int, typer.Option(help="Processes folding parts of the log (default: CPU count).")
    ] = 0,
    swap: Annotated[bool, typer.Option(help="Swap the views to the new version once verified.")] = True,
    refold: Annotated[
        bool,
        typer.Option(
            help="Verify against a second fold of the whole log (about as long as the build)"
            " instead of the checksums the build recorded."
        ),
    ] = False,
    max_quarantined: Annotated[
        int,
        typer.Option(
            help="Orders per part of the log the build may quarantine (events it cannot fold,"
            " rows the database refuses) before it stops on the error as a bug."
        ),
    ] = 10,
) -> None:
    """Build this deploy's version beside the live one, verify it against the log, swap."""
    settings = _settings(database_url)
    projection = catalog.get(name)
    columns = (
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        report = _run(
            _with_pool(
                settings,
                "rebuild",
                lambda pool: rebuild(
                    pool,
                    projection,
                    dsn=settings.database_url,
                    workers=workers or os.cpu_count() or 1,
                    page_size=page_size or settings.projections.rebuild_page_size,
                    batch_size=settings.projections.batch_size,
                    progress=_RichSink(progress),
                    swap=swap,
                    refold=refold,
                    max_quarantined=max_quarantined,
                ),
            )
        )
    console.print(
        f"[green]{name} v{report.version} built[/green]: {report.bulk_events:,} events bulk "
        f"({report.build_rate:,.0f} events/s) + {report.catchup_events:,} caught up, {report.orders:,} orders; "
        + ("verified and swapped" if report.swapped else "verified, not swapped")
        + (f"; v{report.previous} kept for rollback" if report.previous else "")
    )
    if report.quarantined:
        console.print(
            f"[yellow]{len(report.quarantined):,} order(s) could not be folded and are quarantined"
            f" (served stale): `ledger projections quarantine {name}` shows why[/yellow]"
        )


@app.command()
def rollback(
    name: Annotated[str, typer.Argument()],
    database_url: DatabaseUrl = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Roll back even though the previous version is behind the log and no runner of"
            " it runs (readers get it as it is until its code is deployed)."
        ),
    ] = False,
) -> None:
    """Serve the previous version again (the current one becomes `previous`)."""
    settings = _settings(database_url)
    projection = catalog.get(name)

    async def main(pool: asyncpg.Pool) -> registry.Rollback:
        async with connection(pool) as conn:
            return await registry.rollback(conn, projection, force=force)

    done = _run(_with_pool(settings, "rollback", main))
    console.print(f"{name}: v{done.to_version} is live again (v{done.from_version} kept as previous)")
    if done.lag_events:
        catching_up = "its runner is catching up" if done.runner_active else "no runner of it runs"
        console.print(
            f"[yellow]v{done.to_version} is {done.lag_events:,} events behind the log; {catching_up}[/yellow]"
        )


@app.command()
def status(database_url: DatabaseUrl = None) -> None:
    """Each projection's versions: registry status, checkpoint, lag in events, runner state."""
    settings = _settings(database_url)

    async def main(pool: asyncpg.Pool) -> list[Any]:
        return [line for p in catalog.PROJECTIONS.values() for line in await projection_status(pool, p)]

    lines = _run(_with_pool(settings, "status", main))
    table = Table(
        "projection", "version", "status", "state", "checkpoint", "lag (events)", "quarantined", "code"
    )
    for line in lines:
        table.add_row(
            line.projection,
            f"v{line.version}",
            line.status,
            line.state
            + (f" (+{line.standbys} standby)" if line.standbys and line.state == "running" else ""),
            "-" if line.checkpoint is None else f"{line.checkpoint[0]}:{line.checkpoint[1]}",
            "-" if line.lag_events is None else f"{line.lag_events:,}",
            f"[red]{line.quarantined:,}[/red]" if line.quarantined else "0",
            "ok" if line.code_matches else "[red]changed: bump version[/red]",
        )
    Console().print(table)


@app.command(name="quarantine")
def quarantine_command(
    name: Annotated[str, typer.Argument(help="Projection (e.g. order_state).")],
    database_url: DatabaseUrl = None,
    version: Annotated[int | None, typer.Option(help="Version (default: this deploy's).")] = None,
) -> None:
    """The orders a version could not apply: first failing event and error (their rows are stale)."""
    settings = _settings(database_url)
    projection = catalog.get(name)
    v = version or projection.version

    async def main(pool: asyncpg.Pool) -> list[Any]:
        return await quarantine.entries(pool, projection.name, v)

    rows = _run(_with_pool(settings, "status", main))
    table = Table("order", "event version", "position", "since", "retry requested", "error")
    for row in rows:
        table.add_row(
            row["stream_id"],
            str(row["event_version"]),
            "-" if row["position"] is None else str(row["position"]),
            row["quarantined_at"].isoformat(timespec="seconds"),
            "yes" if row["retry_requested"] else "no",
            row["error"],
        )
    Console().print(table)
    console.print(f"{name} v{v}: {len(rows):,} quarantined order(s)")


@app.command(name="refold")
def refold_command(
    name: Annotated[str, typer.Argument(help="Projection (e.g. order_state).")],
    order_ids: Annotated[
        list[str] | None, typer.Argument(help="Orders to fold again (default: every quarantined one).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Ask the running version's runner to fold quarantined orders again (after a fix).

    The runner is the version's only writer, so it does the work: at its next idle poll, or
    when it next starts (a runner folds every quarantined order again on takeover).
    """
    settings = _settings(database_url)
    projection = catalog.get(name)
    streams = None if not order_ids else [i if order_id_of(i) is not None else stream_id_of(i) for i in order_ids]

    async def main(pool: asyncpg.Pool) -> int:
        return await quarantine.request_retry(pool, projection.name, projection.version, streams)

    requested = _run(_with_pool(settings, "refold", main))
    console.print(f"{name} v{projection.version}: refold requested for {requested:,} quarantined order(s)")


if __name__ == "__main__":
    app()

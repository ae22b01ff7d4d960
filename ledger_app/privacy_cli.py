"""`ledger privacy`: erase, export and the erasure report from a terminal (docs/privacy.md).

The same `PrivacyService` as the API's `/api/v3/subjects/...` routes, composed here with the
destinations' report (the root may join the write side and the fan-out).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from consumers.fanout.privacy import destination_report
from ledger.api.app import event_registry
from ledger.privacy.cipher import Keyring
from ledger.privacy.erasure import InvalidSubject, PrivacyService, SubjectNotFound
from ledger.privacy.setup import pg_codec
from ledger.store import EventStore, create_pool
from ledger_kernel.settings import Settings

app = typer.Typer(help="Personal data: erase a data subject, export what is held, the erasure report.")
T = TypeVar("T")
SUBJECT_HELP = "profile:<profile id>, email:<address> or order:<order id>"


def _run(work: Callable[[PrivacyService], Awaitable[T]]) -> T:
    async def run() -> T:
        settings = Settings()
        pool = await create_pool(settings.database_url, settings.store, application_name="ledger-privacy")
        try:
            codec = pg_codec(pool, settings.privacy)
            if codec is None:
                typer.echo(
                    "no key-encryption key is set (LEDGER_PRIVACY__KEK or LEDGER_PRIVACY__KEK_FILE)", err=True
                )
                raise typer.Exit(78)
            store = EventStore(pool, event_registry(), settings.store, codec=codec)
            service = PrivacyService(
                pool,
                store,
                codec,
                codec.store,
                intake_retention_hours=settings.privacy.kafka_retention_hours,
                places=[destination_report(pool)],
            )
            try:
                return await work(service)
            finally:
                await store.aclose()
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except (SubjectNotFound, InvalidSubject) as exc:
        typer.echo(f"{type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def _print(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command("status")
def status(subject: Annotated[str, typer.Argument(help=SUBJECT_HELP)]) -> None:
    """The erasure report: per place (event store, read models, Kafka, destinations), erased when or pending."""
    report = _run(lambda service: service.report(subject))
    for place in report["places"]:
        when = place["erased_at"] or "-"
        typer.echo(f"{place['place']:<28} {place['status']:<16} {when}  {place['detail']}")


@app.command("erase")
def erase(
    subject: Annotated[str, typer.Argument(help=SUBJECT_HELP)],
    basis: Annotated[
        str, typer.Option(help="Why (recorded in the event and the report).")
    ] = "data subject request",
    by: Annotated[str, typer.Option(help="Who asked (recorded as the actor).")] = "cli",
) -> None:
    """Erase a data subject: destroy their key, append PersonalDataErased to each of their orders."""
    _print(_run(lambda service: service.erase(subject, requested_by=by, basis=basis)).to_json())


@app.command("export")
def export(subject: Annotated[str, typer.Argument(help=SUBJECT_HELP)]) -> None:
    """Every personal datum held about a data subject, as JSON."""
    _print(_run(lambda service: service.export(subject)))


@app.command("new-kek")
def new_kek() -> None:
    """Print a fresh key-encryption key (base64) for LEDGER_PRIVACY__KEK or a KEK file."""
    typer.echo(Keyring.generate_base64())

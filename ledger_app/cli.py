"""`ledger`: one CLI, one verb per process (docs/architecture.md#processes).

Each verb builds `Settings` once (environment `LEDGER_*`, `.env`) and hands it to its package's
composition root; nothing else reads the environment. Typer has no async commands, so every verb
wraps its work in `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from consumers.cli import app as fanout_app
from ledger.api.cli import tokens_app
from ledger.audit_cli import app as audit_app
from ledger.intake.cli import asyncapi, intake
from ledger.relay.cli import relay_app
from ledger_app import cli_errors
from ledger_app.privacy_cli import app as privacy_app
from ledger_app.reconcile.cli import reconcile
from ledger_kernel.observability import configure_logging
from ledger_kernel.observability.metrics import MULTIPROCESS_DIR_ENV, multiprocess_mode, multiprocess_registry
from ledger_kernel.settings import Settings
from projections.cli import app as projections_app

app = typer.Typer(
    name="ledger",
    help="Event-sourced order ledger: store, API, relay, projections and fan-out.",
    epilog=(
        "A failing command prints one line (what failed, where, which setting to check) and exits"
        " 78 invalid setting, 69 PostgreSQL unreachable, 77 PostgreSQL refused us, 75 Kafka"
        " unreachable, 70 anything else; `ledger --debug COMMAND` prints the traceback instead."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="LEDGER_DEBUG",
            help="On failure, print the full traceback instead of one line (supervisors can set"
            " LEDGER_DEBUG=1 to keep a crashing process's traceback in its log).",
        ),
    ] = False,
) -> None:
    """Global options; `--debug` is read by `cli_errors.run_cli` when a command fails."""
    cli_errors.set_debug(debug)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.api.host)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings.api.port)")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="HTTP worker processes (default: settings.api.workers, else one per core)"),
    ] = None,
) -> None:
    """Serve the HTTP API with uvicorn, in one worker process per core unless told otherwise."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    serve_api(
        settings,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=api_workers(workers, settings.api.workers, _usable_cores()),
    )


def _usable_cores() -> int | None:
    """The cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count()


def api_workers(option: int | None, setting: int | None, cores: int | None) -> int:
    """How many API workers: `--workers`, else `api.workers`, else one per core."""
    return option or setting or cores or 1


def serve_api(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Run the API: in this process with one worker; else as uvicorn's supervisor of `workers`.

    Workers are stateless (every request reads what it needs from PostgreSQL), so uvicorn's
    supervisor spreads connections over them as the kernel accepts them. Their metrics are
    shared through prometheus_client's multiprocess mode (`ledger_kernel.observability.metrics`):
    a fresh directory per run (unless the operator set one), and `api.metrics_port`, if set, is
    served here by the supervisor, for every worker.
    """
    import uvicorn
    from prometheus_client import start_http_server
    from uvicorn.supervisors import Multiprocess

    from ledger.api.headers import server_options
    from ledger_app.listener import tcp_listener

    if workers == 1:
        from ledger_app.api import deployed_app

        uvicorn.run(
            deployed_app(settings), host=host, port=port, log_config=None, access_log=False, **server_options()
        )
        return
    with contextlib.ExitStack() as stack:
        if not multiprocess_mode():
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-api-metrics-"))
            os.environ[MULTIPROCESS_DIR_ENV] = directory  # inherited by the spawned workers
            stack.callback(os.environ.pop, MULTIPROCESS_DIR_ENV, None)
        if settings.api.metrics_port is not None:
            server, thread = start_http_server(
                settings.api.metrics_port, addr=settings.api.host, registry=multiprocess_registry()
            )
            stack.callback(thread.join, 5)
            stack.callback(server.server_close)
            stack.callback(server.shutdown)
        config = uvicorn.Config(
            "ledger_app.api:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            **server_options(),
        )
        with contextlib.suppress(KeyboardInterrupt):
            Multiprocess(config, sockets=[tcp_listener(config)]).run()


app.command()(intake)
app.add_typer(relay_app, name="relay")
app.command()(asyncapi)
app.add_typer(tokens_app, name="tokens")
app.add_typer(projections_app, name="projections")
audit_app.command("reconcile")(reconcile)
app.add_typer(audit_app, name="audit")
app.add_typer(privacy_app, name="privacy")
app.add_typer(
    fanout_app, name="fanout", help="Fan-out workers to Omneo and Omnisend: run, parked, redrive, replay."
)


class Vendor(StrEnum):
    omneo = "omneo"
    omnisend = "omnisend"


@app.command()
def migrate() -> None:
    """Apply the SQL migrations (idempotent, under an advisory lock, checksums verified)."""
    from ledger_app.migrations import migrate_all
    from projections.setup import install_projections

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    applied = asyncio.run(migrate_all(settings.database_url))
    typer.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    statuses = asyncio.run(install_projections(settings.database_url))
    for name, status in statuses.items():
        typer.echo(f"projection {name}: {status}")
    if any(status.startswith("refused") for status in statuses.values()):
        raise typer.Exit(2)


class DevKafka(StrEnum):
    """The broker `ledger dev` starts when LEDGER_KAFKA_BOOTSTRAP_SERVERS names none."""

    tansu = "tansu"
    apache = "apache"


@app.command()
def dev(
    home: Annotated[Path, typer.Option(help="Where data, logs and dev.env live.")] = Path(".ledger"),
    api_port: Annotated[int, typer.Option(help="API port (another free port is taken if busy).")] = 8000,
    kafka: Annotated[
        DevKafka,
        typer.Option(
            help="Broker to start: tansu (needs nothing) or apache (Apache Kafka; needs java and mvn)."
        ),
    ] = DevKafka.tansu,
) -> None:
    """Run the whole system on embedded defaults: PostgreSQL, Kafka, sandboxes and every process."""
    import os

    from ledger_app.dev import DEV_EXTRA, missing_dev_extras

    missing = missing_dev_extras(os.environ)
    if missing:
        typer.echo(
            f"ledger dev needs the dev extra ({', '.join(missing)} not installed): {DEV_EXTRA}",
            err=True,
        )
        raise typer.Exit(2)
    from ledger_app.dev.stack import run_dev

    if kafka is DevKafka.apache:
        from ledger_app.dev.apache_kafka import missing_tools

        missing = missing_tools()
        if missing:
            typer.echo(
                f"ledger dev --kafka apache needs {' and '.join(missing)} on PATH (OpenJDK 17+, Maven);"
                " install them or run plain `ledger dev` (Tansu)",
                err=True,
            )
            raise typer.Exit(2)
    elif not os.environ.get("LEDGER_KAFKA_BOOTSTRAP_SERVERS") and Settings().relay.exactly_once:
        # The relay would refuse to start on Tansu (no transactions) and be restarted for ever.
        typer.echo(
            "ledger: exactly-once publication (LEDGER_RELAY__EXACTLY_ONCE) needs a broker with"
            " transactions, and Tansu has none; run `ledger dev --kafka apache`, or unset it"
            " for at-least-once",
            err=True,
        )
        raise typer.Exit(cli_errors.ExitCode.SETTINGS)
    raise typer.Exit(run_dev(home.resolve(), api_port, typer.echo, kafka=kafka.value))


@app.command()
def demo(
    env_file: Annotated[Path, typer.Option(help="Written by `ledger dev`.")] = Path(".ledger/dev.env"),
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the fan-out to finish.")] = 60.0,
) -> None:
    """Drive a split-shipment checkout story through the running stack, printing curl for each step."""
    from ledger_app.dev.demo import DemoError, run_demo

    try:
        result = run_demo(env_file, typer.echo, timeout)
    except DemoError as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"\ndone: order {result['order_id']} ({result['external_id']}) reached both destinations.")


@app.command()
def sandbox(
    vendor: Annotated[Vendor, typer.Argument(help="Which API to imitate.")],
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Default 8081 (omneo) or 8082 (omnisend).")] = 0,
    token: Annotated[
        str | None, typer.Option(help="Bearer token (Omneo) or X-API-KEY (Omnisend) to accept.")
    ] = None,
) -> None:
    """Serve a faithful local sandbox of Omneo or Omnisend (request log, state, fault injection)."""
    from consumers.sandbox import serve

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    # The same settings the workers read: the sandbox checks the countryCode format they send.
    country_format = settings.omnisend.country_code_format
    order_number = settings.omnisend.order_number_type
    asyncio.run(
        serve(
            vendor.value,
            host,
            port,
            token,
            country_code_format=country_format,
            order_number_type=order_number,
        )
    )


def main() -> None:
    """The `ledger` console script: the CLI behind the one-line failure mapping (`cli_errors`)."""
    cli_errors.run_cli(app)


if __name__ == "__main__":
    main()

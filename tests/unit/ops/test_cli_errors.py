"""The failure classification behind `ledger`'s one-line errors (ledger_app/cli_errors.py)."""

from __future__ import annotations

import socket

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from ledger_app.cli_errors import ExitCode, classify, redact_url, run_cli
from ledger_kernel.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_broker_down_is_broker_unreachable_naming_the_bootstrap_setting() -> None:
    servers = f"127.0.0.1:{_closed_port()}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=2000)
    with pytest.raises(Exception) as raised:
        await admin.start()
    await admin.close()
    failure = classify(raised.value)
    assert failure.code == ExitCode.BROKER_UNREACHABLE
    assert failure.setting == "LEDGER_KAFKA_BOOTSTRAP_SERVERS"
    assert failure.where == servers


async def test_database_down_reports_the_url_the_connection_was_given_without_password() -> None:
    url = f"postgresql://ops:hunter2@127.0.0.1:{_closed_port()}/ledger"
    with pytest.raises(OSError) as raised:
        await asyncpg.connect(url)
    failure = classify(raised.value)
    assert failure.code == ExitCode.DATABASE_UNREACHABLE
    assert failure.where == url.replace("hunter2", "***")
    assert "hunter2" not in failure.line()


def test_settings_validation_error_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_RELAY__BATCH_SIZE", "many")
    with pytest.raises(ValidationError) as raised:
        Settings()
    failure = classify(raised.value)
    assert failure.code == ExitCode.SETTINGS
    assert failure.setting == "LEDGER_RELAY__BATCH_SIZE"


def test_unforeseen_error_is_other_and_points_at_debug() -> None:
    failure = classify(RuntimeError("boom\nsecond line"))
    assert failure.code == ExitCode.OTHER
    assert "\n" not in failure.line()
    assert "--debug" in failure.line()


def test_a_query_error_after_connecting_is_not_called_unreachable() -> None:
    failure = classify(asyncpg.UndefinedTableError('relation "api_tokens" does not exist'))
    assert failure.code == ExitCode.OTHER
    assert "api_tokens" in failure.line()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=x&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://u:p@h1:1,h2:2/db", "postgresql://u:***@h1:1,h2:2/db"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_redact_url_hides_passwords_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_run_cli_exits_with_the_kind_code_and_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def failing() -> None:
        raise RuntimeError("nope")

    with pytest.raises(SystemExit) as exited:
        run_cli(failing)
    assert exited.value.code == ExitCode.OTHER
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

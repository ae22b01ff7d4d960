"""Operator mistakes meet one line and a distinct exit code, not a traceback (ledger_app/cli_errors.py).

Each test runs the installed `ledger` console script in a subprocess, in an empty folder (so
no `.env` is read), with only the setting under test changed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ledger_app.cli_errors import ExitCode
from tests.harness.postgres import dsn_with_database

pytestmark = pytest.mark.e2e

LEDGER = str(Path(sys.executable).with_name("ledger"))


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _ledger(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [LEDGER, *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


ONE_SHOT_COMMANDS = [
    ["migrate"],
    ["tokens", "create", "--name", "ops", "--scope", "admin"],
    ["projections", "status"],
    ["fanout", "parked"],
    ["audit", "verify"],
]


@pytest.mark.parametrize("command", ONE_SHOT_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_database_down_is_one_line_naming_the_setting_with_its_exit_code(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"postgresql://ledger:s3cret@127.0.0.1:{_closed_port()}/ledger"
    done = _ledger(tmp_path, *command, LEDGER_DATABASE_URL=url)
    assert done.returncode == ExitCode.DATABASE_UNREACHABLE, done.stderr
    line = _one_line(done.stderr)
    assert "PostgreSQL unreachable" in line
    assert "LEDGER_DATABASE_URL" in line
    assert url.replace("s3cret", "***") in line
    assert "s3cret" not in done.stderr + done.stdout


def test_database_url_given_as_an_option_is_the_one_reported(tmp_path: Path) -> None:
    env_url = f"postgresql://ledger@127.0.0.1:{_closed_port()}/from_env"
    option_url = f"postgresql://ledger@127.0.0.1:{_closed_port()}/from_option"
    done = _ledger(
        tmp_path, "projections", "status", "--database-url", option_url, LEDGER_DATABASE_URL=env_url
    )
    assert done.returncode == ExitCode.DATABASE_UNREACHABLE, done.stderr
    assert option_url in _one_line(done.stderr)


@pytest.mark.parametrize(
    "url",
    ["http://db.example/ledger", "postgresql://ledger@127.0.0.1:notaport/ledger"],
    ids=["scheme", "port"],
)
def test_malformed_database_url_is_a_settings_error(tmp_path: Path, url: str) -> None:
    done = _ledger(tmp_path, "migrate", LEDGER_DATABASE_URL=url)
    assert done.returncode == ExitCode.SETTINGS, done.stderr
    line = _one_line(done.stderr)
    assert "malformed PostgreSQL URL" in line
    assert "LEDGER_DATABASE_URL" in line


def test_invalid_nested_setting_is_named_with_its_environment_variable(tmp_path: Path) -> None:
    done = _ledger(tmp_path, "projections", "status", LEDGER_STORE__POOL_MAX_SIZE="lots")
    assert done.returncode == ExitCode.SETTINGS, done.stderr
    line = _one_line(done.stderr)
    assert "LEDGER_STORE__POOL_MAX_SIZE" in line
    assert "'lots'" in line


def test_unknown_log_level_is_a_settings_error_not_a_crash(tmp_path: Path) -> None:
    done = _ledger(tmp_path, "fanout", "parked", LEDGER_LOG_LEVEL="LOUD")
    assert done.returncode == ExitCode.SETTINGS, done.stderr
    line = _one_line(done.stderr)
    assert "LEDGER_LOG_LEVEL" in line
    assert "'LOUD'" in line


def test_unparsable_settings_group_is_a_settings_error(tmp_path: Path) -> None:
    done = _ledger(tmp_path, "tokens", "create", "--name", "ops", "--scope", "admin", LEDGER_STORE="{oops")
    assert done.returncode == ExitCode.SETTINGS, done.stderr
    assert "LEDGER_STORE" in _one_line(done.stderr)


@pytest.mark.postgres
def test_unknown_database_is_refused_not_unreachable(tmp_path: Path, database_url: str) -> None:
    url = dsn_with_database(database_url, "ledger_no_such_database")
    done = _ledger(tmp_path, "audit", "verify", LEDGER_DATABASE_URL=url)
    assert done.returncode == ExitCode.DATABASE_REFUSED, done.stderr
    line = _one_line(done.stderr)
    assert "refused" in line
    assert "ledger_no_such_database" in line
    assert "LEDGER_DATABASE_URL" in line


@pytest.mark.parametrize("switch", ["option", "environment"])
def test_debug_prints_the_traceback(tmp_path: Path, switch: str) -> None:
    url = f"postgresql://ledger@127.0.0.1:{_closed_port()}/ledger"
    if switch == "option":
        done = _ledger(tmp_path, "--debug", "migrate", LEDGER_DATABASE_URL=url)
    else:
        done = _ledger(tmp_path, "migrate", LEDGER_DATABASE_URL=url, LEDGER_DEBUG="1")
    assert done.returncode not in (0, ExitCode.DATABASE_UNREACHABLE)
    assert "Traceback" in done.stderr
    assert "ConnectionRefusedError" in done.stderr
    assert len(done.stderr.splitlines()) > 10

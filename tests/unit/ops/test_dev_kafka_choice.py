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

"""`ledger privacy` and `ledger audit` from a terminal: erase, status, export; no plain text after erasure."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from ledger_app.cli import app
from tests.integration.privacy.conftest import ALICE, PrivacyApi, plain_values

pytestmark = pytest.mark.postgres


async def _invoke(papi: PrivacyApi, *args: str) -> tuple[int, str]:
    env = {"LEDGER_DATABASE_URL": papi.database_url, "LEDGER_PRIVACY__KEK": papi.kek}
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    return result.exit_code, result.output


async def test_the_cli_erases_reports_and_exports_and_shows_no_plain_text_afterwards(
    papi: PrivacyApi,
) -> None:
    order = await papi.place(profile_id="profile-cli", **ALICE)
    code, out = await _invoke(papi, "audit", "history", order["id"], "--json")
    assert code == 0, out
    assert ALICE["email"] in out  # opened while the key lives

    code, out = await _invoke(
        papi, "privacy", "erase", "profile:profile-cli", "--basis", "ticket 7", "--by", "dpo"
    )
    assert code == 0, out
    assert json.loads(out)["keys_destroyed"] == 1

    code, status = await _invoke(papi, "privacy", "status", "profile:profile-cli")
    assert code == 0, status
    assert "event_store" in status
    assert "erased" in status

    outputs = [status]
    for args in (("privacy", "export", "profile:profile-cli"), ("audit", "history", order["id"], "--json")):
        code, out = await _invoke(papi, *args)
        assert code == 0, out
        outputs.append(out)
    code, verify = await _invoke(papi, "audit", "verify")
    assert code == 0, verify
    for out in outputs:
        for value in plain_values(ALICE):
            assert value not in out, value

    code, out = await _invoke(papi, "privacy", "status", "profile:nobody")
    assert code == 1

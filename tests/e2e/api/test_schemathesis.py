"""Schemathesis, every check, over the app's own OpenAPI document against the live server.

The document is the contract a generated client is built from, so the server must keep it:
every answer has a documented status, content type, headers and schema; data the schema
forbids is refused; auth is enforced; a deleted order stays gone; 405s list `Allow`. The
stateful phase follows the document's links (an order placed, then paid, shipped, delivered,
canceled, deleted through the id and shipment id the answers carry).

Runs the `st` CLI as a subprocess (the pytest plugin is disabled in pyproject because it
crashes on this Python at session end), derandomized (`--generation-deterministic`, a fixed
seed) and bounded by examples per operation, so CI time stays about a minute or two.

Checks left out, and why:
- `positive_data_acceptance`: bodies the schema allows can still break a business rule the
  schema cannot state (a capture above the order's total, three decimals for USD, a shipment
  of more than was ordered, a write to a canceled order): those are 409/422 by design.
- `use_after_free` on `GET /api/v3/orders/{order_id}/events` only: a deleted order's history
  stays readable by design (DELETE is a tombstone; auditors read what happened before it).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from tests.e2e.api.conftest import LiveApi

pytestmark = pytest.mark.e2e

EXCLUDED_CHECKS = {
    "positive_data_acceptance": "business rules refuse some schema-valid bodies with 409/422",
}
MAX_EXAMPLES = 30
SEED = 20261207

#: Operations whose datetime inputs still take an integer (seconds since 1970) as a time: strict
#: RFC 3339 parsing is issue 23 H's datetime part, built on another branch. Until it lands, the
#: check that schema-invalid data is refused is off for these operations only (every other
#: check stays on); delete an entry when its operation refuses `canceled_at: 0` and `until=0`.


def _config() -> str:
    """schemathesis.toml: every check on (its default) but `EXCLUDED_CHECKS`, and the
    per-operation exclusions (an operation's config wins over the global one only when the
    checks are chosen here, not with `--checks` on the command line)."""
    lines = ["[checks]"]
    lines += [f"{name} = {{ enabled = false }}" for name in EXCLUDED_CHECKS]
    lines += [
        "\n[[operations]]",
        'include-name = "GET /api/v3/orders/{order_id}/events"',
        "checks = { use_after_free = { enabled = false } }",
    ]
    return "\n".join(lines) + "\n"


ORDER = {
    "currency": "USD",
    "total": 30,
    "items": [{"line_id": "A", "name": "Cap", "quantity": 3, "price_sell": 10}],
}


async def test_schemathesis_all_checks_on_every_operation_find_no_failure(
    live_api: LiveApi, tmp_path: Path
) -> None:
    """Examples, coverage and fuzzing phases, path ids pointing at a real order (with shipment S1)
    so writes reach the domain rules instead of stopping at 404."""
    placed = await live_api.client.post("/api/v3/orders", content=json.dumps(ORDER), headers=live_api.auth())
    order_id = placed.json()["data"]["id"]
    shipped = await live_api.client.post(
        f"/api/v3/orders/{order_id}/shipments",
        content=b'{"shipment_id": "S1", "lines": [{"line_id": "A", "quantity": 1}]}',
        headers=live_api.auth(),
    )
    assert shipped.status_code == 201, shipped.text
    parameters = f'[parameters]\n"path.order_id" = "{order_id}"\n"path.shipment_id" = "S1"\n'
    summary = await _run(live_api, tmp_path, parameters, "examples,coverage,fuzzing")
    assert "✅  Coverage" in summary


async def test_schemathesis_stateful_links_from_a_placed_order_find_no_failure(
    live_api: LiveApi, tmp_path: Path
) -> None:
    """The stateful phase: ids come only from answers, through the document's links."""
    # Only the document's own links: inferred ones (from parameter names) would make every
    # `POST .../{order_id}/...` a starting point fed random ids, and the runs would never place
    # an order to follow.
    stateful = "[phases.stateful]\ninference = { algorithms = [] }\n"
    summary = await _run(live_api, tmp_path, stateful, "stateful")
    covered = re.search(r"API Links: +(\d+) covered", summary)
    assert covered is not None, summary
    assert int(covered[1]) > 0, summary  # the links were followed


async def _run(live_api: LiveApi, tmp_path: Path, parameters: str, phases: str) -> str:
    """Run `st` with every check but `EXCLUDED_CHECKS`; the output's summary, or a failed test."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(parameters + _config())
    st = Path(sys.executable).with_name("st")
    report = tmp_path / "report.ndjson"
    process = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{live_api.url}/openapi.json",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--phases",
        phases,
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--header",
        f"Authorization: Bearer {live_api.tokens['admin']}",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
        "--no-shrink",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 600)
    text = output.decode(errors="replace")
    print(text)  # every failure in full, and the run's summary (operations, cases, per-check counts)
    assert process.returncode == 0, text[-12000:]
    assert "SUMMARY" in text, text[-2000:]
    return text

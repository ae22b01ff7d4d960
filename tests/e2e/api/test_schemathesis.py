"""Schemathesis over the OpenAPI document against the live server: no input yields a 5xx.

Runs the `st` CLI as a subprocess (the pytest plugin is disabled in pyproject because it
crashes on this Python at session end), bounded by example count and time.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.e2e.api.conftest import LiveApi

pytestmark = pytest.mark.e2e

ORDER = {
    "currency": "USD",
    "total": 30,
    "items": [{"line_id": "A", "name": "Cap", "quantity": 3, "price_sell": 10}],
}


async def test_schemathesis_finds_no_server_error(live_api: LiveApi, tmp_path: Path) -> None:
    # A real order (with shipment S1) for the path parameters, so writes reach the domain rules
    # instead of stopping at 404.
    placed = await live_api.client.post("/api/v3/orders", content=json.dumps(ORDER), headers=live_api.auth())
    order_id = placed.json()["data"]["id"]
    shipped = await live_api.client.post(
        f"/api/v3/orders/{order_id}/shipments",
        content=b'{"shipment_id": "S1", "lines": [{"line_id": "A", "quantity": 1}]}',
        headers=live_api.auth(),
    )
    assert shipped.status_code == 201, shipped.text
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.order_id" = "{order_id}"\n"path.shipment_id" = "S1"\n')
    st = Path(sys.executable).with_name("st")
    report = tmp_path / "report.json"
    process = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{live_api.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "10",
        "--seed",
        "20261122",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-time",
        "30",
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
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
    assert "not_a_server_error" in text or "passed" in text.lower(), text[-2000:]

"""One order's story through the HTTP API, as a checkout client tells it, retrying through outages.

Place (a coat and two scarves), set a status, authorise and capture the payment, ship the two
lines separately and deliver both: 8 events, two Omneo Transactions. Every step is retried with
the same `Idempotency-Key` until the ledger answers it, so a lost answer never makes a second
effect.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import httpx

from ledger_app.dev.demo import place_order_body

EVENTS_PER_ORDER = 8
TRANSACTIONS_PER_ORDER = 2


def steps(external_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path under the order or '' for the place, body) of one order's story."""
    payment = {"amount": 289.85, "method": "credit card", "reference": f"PSP-{external_id}"}
    return [
        ("POST", "", place_order_body(external_id)),
        ("PUT", "", {"status": "processing"}),
        ("POST", "/payments", {"kind": "authorized", **payment}),
        ("POST", "/payments", {"kind": "captured", **payment}),
        ("POST", "/shipments", {"shipment_id": "S1", "lines": [{"line_id": "L1", "quantity": 1}], "carrier": "AusPost"}),
        ("POST", "/shipments", {"shipment_id": "S2", "lines": [{"line_id": "L2", "quantity": 2}], "carrier": "StarTrack"}),
        ("POST", "/shipments/S1/delivered", {}),
        ("POST", "/shipments/S2/delivered", {}),
    ]  # fmt: skip


async def call(
    api: httpx.AsyncClient, token: str, method: str, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    """One step, retried with the same Idempotency-Key until the ledger answers it (the
    database may be down or frozen, the answer may be lost): never a second effect."""
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())}
    deadline = time.monotonic() + 180
    while True:
        try:
            response = await api.request(method, path, json=body, headers=headers)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code < 300:
            data: dict[str, Any] = response.json()["data"]
            return data
        if response is not None:
            retriable = response.status_code >= 500 or response.status_code in (408, 409, 429)
            assert retriable, f"{method} {path}: {response.status_code} {response.text}"
        assert time.monotonic() < deadline, f"{method} {path} never succeeded: {response and response.text}"
        await asyncio.sleep(0.2)


async def place_orders(
    api: httpx.AsyncClient,
    token: str,
    external_ids: list[str],
    placed: dict[str, str],
    *,
    rng: random.Random | None = None,
    max_pause_s: float = 0.0,
) -> None:
    """Tell each order's whole story, one order after another; `placed` maps each external id
    to the ledger's order id once its story is done. A pause (drawn from `rng`) after each step
    lets the destinations see the states one by one instead of coalesced."""
    for external_id in external_ids:
        order_id = ""
        for method, path, body in steps(external_id):
            url = "/api/v3/orders" + (f"/{order_id}{path}" if order_id else path)
            data = await call(api, token, method, url, body)
            order_id = order_id or str(data["id"])
            if rng is not None:
                await asyncio.sleep(rng.uniform(0, max_pause_s))
        placed[external_id] = order_id

"""`ledger demo`: a split-shipment checkout story driven through a running stack.

It reads `.ledger/dev.env` (written by `ledger dev`), then places an order for a coat and two
scarves, authorises and captures the payment, ships the coat and the scarves separately and marks
both delivered. Each step prints the equivalent `curl`, so a newcomer can repeat it by hand. At
the end it waits until Omneo holds the order and two Transactions linked to it, and Omnisend holds
the order as fulfilled and paid, and prints what each destination received.
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx


class DemoError(RuntimeError):
    """The stack did not behave as the story expects."""


def read_env(path: Path) -> dict[str, str]:
    """Parse the KEY=VALUE lines of `.ledger/dev.env`."""
    if not path.exists():
        raise DemoError(f"{path} not found: start the stack first with `scripts/dev` (or `ledger dev`)")
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def place_order_body(external_id: str) -> dict[str, Any]:
    """A realistic web-cart order: a coat and two scarves, shipped to Melbourne."""
    return {
        "external_id": external_id,
        "profile_id": "9332c9b2-e31c-4d49-8ec3-62a9466d339c",
        "source": "web",
        "currency": "AUD",
        "status": "pending",
        "email": "jane.citizen@example.com",
        "first_name": "Jane",
        "last_name": "Citizen",
        "shipping": 10.00,
        "total": 289.85,
        "shipping_method": "Standard",
        "payment_method": "credit card",
        "shipping_address": {
            "first_name": "Jane",
            "last_name": "Citizen",
            "address": "1 Collins St",
            "city": "Melbourne",
            "state": "Victoria",
            "state_code": "VIC",
            "postal_code": "3000",
            "country": "Australia",
            "country_code": "AUS",
        },
        "items": [
            {
                "line_id": "L1",
                "sku": "COAT-TR-M",
                "name": "Trench Coat",
                "product_variant_id": 441200,
                "quantity": 1,
                "price_current": 199.95,
                "price_sell": 199.95,
                "price_original": 249.95,
                "categories": ["outerwear", "coats"],
            },
            {
                "line_id": "L2",
                "sku": "SCARF-WL",
                "name": "Wool Scarf",
                "product_variant_id": 551300,
                "quantity": 2,
                "price_current": 39.95,
                "price_sell": 39.95,
                "price_original": 39.95,
                "categories": ["accessories"],
            },
        ],
    }


class Demo:
    """The story, step by step; `say` prints (tests pass a collector)."""

    def __init__(self, env: dict[str, str], say: Callable[[str], None], timeout_s: float = 60.0) -> None:
        self.api = env["LEDGER_API_URL"].rstrip("/")
        self.token = env["LEDGER_TOKEN"]
        self.omneo = env.get("LEDGER_OMNEO_SANDBOX_URL", "").rstrip("/")
        self.omnisend = env.get("LEDGER_OMNISEND_SANDBOX_URL", "").rstrip("/")
        self.say = say
        self.timeout_s = timeout_s
        self.http = httpx.Client(timeout=15.0)

    def close(self) -> None:
        self.http.close()

    def call(self, title: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request, print the equivalent curl and the answer, fail loudly on an error."""
        url = f"{self.api}{path}"
        key = str(uuid.uuid4())
        self.say(f"\n# {title}")
        curl = ["curl", "-sS", "-X", method, shlex.quote(url), "-H", '"Authorization: Bearer $LEDGER_TOKEN"']
        if body is not None:
            curl += ["-H", shlex.quote("Content-Type: application/json")]
            curl += ["-H", shlex.quote(f"Idempotency-Key: {key}"), "-d", shlex.quote(json.dumps(body))]
        self.say(" ".join(curl))  # double quotes around the token header so the shell expands it
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Idempotency-Key"] = key
        response = self.http.request(method, url, json=body, headers=headers)
        if response.status_code >= 400:
            raise DemoError(f"{method} {path} answered {response.status_code}: {response.text}")
        payload: dict[str, Any] = response.json() if response.content else {}
        return payload

    def run(self) -> dict[str, Any]:
        external_id = f"CART-{uuid.uuid4().hex[:8].upper()}"
        order = self.call(
            "Place the order (a coat and two scarves)",
            "POST",
            "/api/v3/orders",
            place_order_body(external_id),
        )["data"]
        oid = order["id"]
        self._show(order)
        for kind in ("authorized", "captured"):
            order = self.call(
                f"Payment {kind}",
                "POST",
                f"/api/v3/orders/{oid}/payments",
                {
                    "kind": kind,
                    "amount": 289.85,
                    "method": "credit card",
                    "reference": f"PSP-{kind[:4]}-{external_id}",
                },
            )["data"]
            self._show(order)
        for sid, line, qty, carrier in (("S1", "L1", 1, "AusPost"), ("S2", "L2", 2, "StarTrack")):
            order = self.call(
                f"Ship {sid} ({line} x{qty}) from a different warehouse",
                "POST",
                f"/api/v3/orders/{oid}/shipments",
                {
                    "shipment_id": sid,
                    "lines": [{"line_id": line, "quantity": qty}],
                    "carrier": carrier,
                    "tracking_code": f"TRK{sid}{external_id[-4:]}",
                    "tracking_url": f"https://track.example.com/{sid}",
                },
            )["data"]
            self._show(order)
        for sid in ("S1", "S2"):
            order = self.call(
                f"{sid} delivered", "POST", f"/api/v3/orders/{oid}/shipments/{sid}/delivered", {}
            )["data"]
        self._show(order)
        txs = self.call(
            "The Transactions derived from the two paid shipments",
            "GET",
            f"/api/v3/orders/{oid}/transactions",
        )["data"]
        for tx in txs:
            self.say(
                f"  transaction {tx.get('external_id')}: total {tx.get('total')} (shipment {tx.get('shipment_id')})"
            )
        if len(txs) != 2:
            raise DemoError(f"expected two Transactions, got {len(txs)}")
        self.call("The order's history (auditors)", "GET", f"/api/v3/orders/{oid}/events")
        result = {"order_id": oid, "external_id": external_id, "transactions": txs}
        result.update(self._wait_for_destinations(oid, external_id))
        return result

    def _show(self, order: dict[str, Any]) -> None:
        self.say(
            f"  -> version {order.get('version')}: status={order.get('status')} "
            f"payment={order.get('payment_status')} fulfillment={order.get('fulfillment_status')} "
            f"transactions={len(order.get('transactions') or [])}"
        )

    def _wait_for_destinations(self, oid: str, external_id: str) -> dict[str, Any]:
        """Poll both sandboxes until the fan-out has delivered the whole story."""
        deadline = time.monotonic() + self.timeout_s
        omneo_ok = omnisend_ok = False
        omneo_state: dict[str, Any] = {}
        omnisend_state: dict[str, Any] = {}
        self.say("\n# Waiting for the fan-out to reach Omneo and Omnisend ...")
        while time.monotonic() < deadline and not (omneo_ok and omnisend_ok):
            if self.omneo:
                omneo_state = self.http.get(f"{self.omneo}/_sandbox/state").json()
                omneo_ok = _omneo_done(omneo_state, oid, external_id)
            if self.omnisend:
                omnisend_state = self.http.get(f"{self.omnisend}/_sandbox/state").json()
                omnisend_ok = _omnisend_done(omnisend_state, oid, external_id)
            if not (omneo_ok and omnisend_ok):
                time.sleep(0.5)
        if not (omneo_ok and omnisend_ok):
            raise DemoError(
                f"fan-out incomplete after {self.timeout_s}s: omneo={omneo_ok} omnisend={omnisend_ok}"
            )
        self.say(f"  Omneo: the order and two Transactions linked to it   ({self.omneo}/_sandbox/state)")
        self.say(f"  Omnisend: the order fulfilled and paid               ({self.omnisend}/_sandbox/state)")
        return {"omneo": omneo_state, "omnisend": omnisend_state}


def _records(state: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    raw = state.get(kind, [])
    values = raw.values() if isinstance(raw, dict) else raw
    return [r for r in values if isinstance(r, dict)]


def _mentions(record: dict[str, Any], *needles: str) -> bool:
    text = json.dumps(record, default=str)
    return any(n in text for n in needles)


def _omneo_done(state: dict[str, Any], oid: str, external_id: str) -> bool:
    orders = [o for o in _records(state, "orders") if _mentions(o, oid, external_id)]
    if not orders:
        return False
    remote_ids = {str(o.get("id")) for o in orders}
    txs = [t for t in _records(state, "transactions") if str(t.get("order_id")) in remote_ids]
    return len(txs) == 2


def _omnisend_done(state: dict[str, Any], oid: str, external_id: str) -> bool:
    orders = [o for o in _records(state, "orders") if _mentions(o, oid, external_id)]
    return any(
        o.get("fulfillmentStatus") in {"fulfilled", "delivered"} and o.get("paymentStatus") == "paid"
        for o in orders
    )


def run_demo(env_path: Path, say: Callable[[str], None], timeout_s: float = 60.0) -> dict[str, Any]:
    """Run the story against the stack described by `env_path`."""
    demo = Demo(read_env(env_path), say, timeout_s)
    try:
        return demo.run()
    finally:
        demo.close()

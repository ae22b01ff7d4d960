"""Local Omneo: orders and transactions under `/api/v3`, per docs/connectors.md#omneo.

Faithful where documented: bearer auth with `{"message":"Unauthenticated."}`, `{"data": ...}`
wrapping, integer ids assigned here, PUT /orders as a partial merge, transactions upserted
by `external_id` (then `id`) through `POST /transactions/update-create`, void via `is_void`,
Laravel 422 bodies, null `is_void`/`receipt_is_email` rejected. Guessed ([X] in docs/connectors.md#sandbox-guesses):
required order fields, `filter[external_id]` on the order list, PUT `items` replacing the
list, the rate limit (configurable, Laravel `X-RateLimit-*` + `Retry-After` headers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consumers.sandbox import omneo_rules as rules
from consumers.sandbox.app import Call, Reply, Route, SandboxApp, SandboxConfig, now_iso, route
from consumers.sandbox.core import RateDecision
from consumers.sandbox.serving import serve_app

API = "/api/v3"
_MESSAGES = {401: "Unauthenticated.", 404: "Not Found", 429: "Too Many Attempts.", 500: "Server Error"}
_SERVER_OWNED = ("id", "created_at", "updated_at", "transactions")


@dataclass
class OmneoConfig(SandboxConfig):
    """Omneo sandbox settings; the rate limit is unknown upstream, so it is a setting here."""

    token: str = "omneo-sandbox-token"  # noqa: S105 - a local fake
    rate_limit_per_minute: int | None = 600
    order_required: tuple[str, ...] = ("external_id", "total", "status", "items")
    transaction_required: tuple[str, ...] = ("total", "transacted_at", "timezone", "items", "location_id")
    """The SDK's TransactionInput requires these (profile_id too, but the docs allow anonymous
    Transactions that are claimed later, so it is not required here)."""
    first_id: int = 1001
    per_page: int = 15


class OmneoSandbox(SandboxApp):
    """In-memory Omneo; `GET /orders/{id}` embeds the order's linked transactions."""

    config: OmneoConfig

    def __init__(self, config: OmneoConfig | None = None) -> None:
        config = config or OmneoConfig()
        self.orders: dict[int, dict[str, Any]] = {}
        self.transactions: dict[int, dict[str, Any]] = {}
        self._next_id = config.first_id
        super().__init__(config)

    # -- vendor hooks -------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            route("GET", f"{API}/orders", self.list_orders),
            route("POST", f"{API}/orders", self.create_order),
            route("GET", f"{API}/orders/{{id}}", self.get_order),
            route("PUT", f"{API}/orders/{{id}}", self.update_order),
            route("DELETE", f"{API}/orders/{{id}}", self.delete_order),
            route("GET", f"{API}/transactions", self.list_transactions),
            route("POST", f"{API}/transactions", self.create_transaction),
            route("POST", f"{API}/transactions/update-create", self.update_create),
            route("GET", f"{API}/transactions/external/{{external_id}}", self.get_transaction_by_external),
            route("GET", f"{API}/transactions/{{id}}", self.get_transaction),
            route("PUT", f"{API}/transactions/{{id}}", self.update_transaction),
            route("DELETE", f"{API}/transactions/{{id}}", self.delete_transaction),
        ]

    def is_vendor_path(self, path: str) -> bool:
        return path.startswith(f"{API}/")

    def authenticated(self, headers: Mapping[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and bool(token) and token.strip() == self.config.token

    def error(self, status: int, message: str, fields: Mapping[str, list[str]] | None = None) -> Reply:
        if fields:
            return Reply(status, {"message": "The given data was invalid.", "errors": dict(fields)})
        text = _MESSAGES.get(status, message) if status in (401, 404, 429) or status >= 500 else message
        return Reply(status, {"message": text})

    def rate_headers(self, decision: RateDecision) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(decision.limit),
            "X-RateLimit-Remaining": str(max(decision.remaining, 0)),
        }
        if not decision.allowed:
            headers["Retry-After"] = str(decision.reset_s)
            headers["X-RateLimit-Reset"] = str(math.ceil(self.clock.time()) + decision.reset_s)
        return headers

    def order_keys(self, call: Call) -> set[str]:
        keys: set[str] = set()
        if call.path.startswith(f"{API}/orders/"):
            keys.add(call.path.removeprefix(f"{API}/orders/").split("/")[0])
        if isinstance(call.body, dict):
            keys |= {
                str(call.body[k])
                for k in ("external_id", "order_id", "external_order_id")
                if call.body.get(k)
            }
        return keys

    def snapshot(self) -> dict[str, Any]:
        return {
            "orders": {str(i): self._order_view(o) for i, o in self.orders.items()},
            "transactions": {str(i): dict(t) for i, t in self.transactions.items()},
        }

    def clear_records(self) -> None:
        self.orders.clear()
        self.transactions.clear()
        self._next_id = self.config.first_id

    # -- helpers --------------------------------------------------------------------------------
    def _invalid(self, errors: rules.Errors) -> Reply:
        return self.error(422, "The given data was invalid.", errors)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _record(self, body: Mapping[str, Any], record_id: int) -> dict[str, Any]:
        now = now_iso(self.clock)
        clean = {k: v for k, v in body.items() if k not in _SERVER_OWNED}
        return {"id": record_id, **clean, "created_at": now, "updated_at": now}

    def _merge(self, record: dict[str, Any], changes: Mapping[str, Any]) -> None:
        record.update({k: v for k, v in changes.items() if k not in _SERVER_OWNED})
        record["updated_at"] = now_iso(self.clock)

    def _order_view(self, order: Mapping[str, Any]) -> dict[str, Any]:
        linked = [t for t in self.transactions.values() if str(t.get("order_id")) == str(order["id"])]
        return {**order, "transactions": linked}

    def _lookup(self, table: dict[int, dict[str, Any]], raw_id: str) -> dict[str, Any] | None:
        return table.get(int(raw_id)) if raw_id.isdigit() else None

    def _page(self, rows: list[dict[str, Any]], call: Call) -> Reply:
        page = int(call.query["page"]) if call.query.get("page", "").isdigit() else 1
        per_page = self.config.per_page
        chunk = rows[(page - 1) * per_page : page * per_page]
        last = max(1, math.ceil(len(rows) / per_page))
        meta = {"current_page": page, "per_page": per_page, "total": len(rows), "last_page": last}
        return Reply(200, {"data": chunk, "links": {"prev": None, "next": None}, "meta": meta})

    def _check_order_link(self, body: Mapping[str, Any], errors: rules.Errors) -> None:
        order_id = body.get("order_id")
        if (
            order_id is not None
            and "order_id" not in errors
            and self._lookup(self.orders, str(order_id)) is None
        ):
            errors["order_id"] = ["The selected order id is invalid."]

    # -- orders ---------------------------------------------------------------------------------
    def create_order(self, call: Call) -> Reply:
        errors = rules.validate(call.body, rules.ORDER_FIELDS, self.config.order_required)
        if errors:
            return self._invalid(errors)
        order = self._record(call.body, self._new_id())
        self.orders[order["id"]] = order
        return Reply(201, {"data": self._order_view(order)})

    def list_orders(self, call: Call) -> Reply:
        wanted = call.query.get("filter[external_id]")
        rows = [
            self._order_view(o)
            for o in self.orders.values()
            if wanted is None or o.get("external_id") == wanted
        ]
        return self._page(rows, call)

    def get_order(self, call: Call) -> Reply:
        order = self._lookup(self.orders, call.params["id"])
        return Reply(200, {"data": self._order_view(order)}) if order else self.error(404, "")

    def update_order(self, call: Call) -> Reply:
        order = self._lookup(self.orders, call.params["id"])
        if order is None:
            return self.error(404, "")
        errors = rules.validate(call.body, rules.ORDER_FIELDS, self.config.order_required, partial=True)
        if errors:
            return self._invalid(errors)
        self._merge(order, call.body)
        return Reply(200, {"data": self._order_view(order)})

    def delete_order(self, call: Call) -> Reply:
        order = self._lookup(self.orders, call.params["id"])
        if order is None:
            return self.error(404, "")
        del self.orders[order["id"]]
        return Reply(204)

    # -- transactions ---------------------------------------------------------------------------
    def create_transaction(self, call: Call) -> Reply:
        errors = rules.validate(call.body, rules.TRANSACTION_FIELDS, self.config.transaction_required)
        if not errors:
            self._check_order_link(call.body, errors)
        if errors:
            return self._invalid(errors)
        tx = self._record(call.body, self._new_id())
        self.transactions[tx["id"]] = tx
        return Reply(201, {"data": tx})

    def update_create(self, call: Call) -> Reply:
        """Match by `external_id`, then `id`; update (partial) when found, else create."""
        body = call.body if isinstance(call.body, dict) else None
        existing = None
        if body is not None and body.get("external_id"):
            existing = next(
                (t for t in self.transactions.values() if t.get("external_id") == body["external_id"]), None
            )
        if existing is None and body is not None and body.get("id") is not None:
            existing = self._lookup(self.transactions, str(body["id"]))
        if existing is None:
            return self.create_transaction(call)
        errors = rules.validate(body, rules.TRANSACTION_FIELDS, (), partial=True)
        if not errors:
            self._check_order_link(body or {}, errors)
        if errors:
            return self._invalid(errors)
        self._merge(existing, body or {})
        return Reply(200, {"data": existing})

    def list_transactions(self, call: Call) -> Reply:
        return self._page(list(self.transactions.values()), call)

    def get_transaction(self, call: Call) -> Reply:
        tx = self._lookup(self.transactions, call.params["id"])
        return Reply(200, {"data": tx}) if tx else self.error(404, "")

    def get_transaction_by_external(self, call: Call) -> Reply:
        wanted = call.params["external_id"]
        tx = next((t for t in self.transactions.values() if t.get("external_id") == wanted), None)
        return Reply(200, {"data": tx}) if tx else self.error(404, "")

    def update_transaction(self, call: Call) -> Reply:
        tx = self._lookup(self.transactions, call.params["id"])
        if tx is None:
            return self.error(404, "")
        errors = rules.validate(call.body, rules.TRANSACTION_FIELDS, (), partial=True)
        if not errors:
            self._check_order_link(call.body, errors)
        if errors:
            return self._invalid(errors)
        self._merge(tx, call.body)
        return Reply(200, {"data": tx})

    def delete_transaction(self, call: Call) -> Reply:
        tx = self._lookup(self.transactions, call.params["id"])
        if tx is None:
            return self.error(404, "")
        del self.transactions[tx["id"]]
        return Reply(204)


def create_app(config: OmneoConfig | None = None) -> OmneoSandbox:
    """The Omneo sandbox as an ASGI app."""
    return OmneoSandbox(config)


async def serve(host: str = "127.0.0.1", port: int = 8081, config: OmneoConfig | None = None) -> None:
    """Run the Omneo sandbox in the foreground (for `ledger sandbox omneo`)."""
    await serve_app(create_app(config), host, port)

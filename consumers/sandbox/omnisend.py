"""Local Omnisend: v3 orders (`/v3/orders`), v3 categories, and events on the 2026-03-15 API
(`/api/events`: `Authorization: Omnisend-API-Key`, required `Omnisend-Version`, RFC 9457
problem+json errors) and on v5 (`/v5/events`, its predecessor), per docs/connectors.md.

Faithful where documented: `X-API-KEY` auth, `{"error": ...}` bodies, POST create-only,
PUT full replace, PATCH of status/tracking fields only, DELETE 204, 400 requests/minute with
`X-Rate-Limit-Limit/Remaining/Reset` on every response and 429 when exceeded (no Retry-After,
as documented). Guessed where the vendor is silent (see README of the report): duplicate
orderID -> 409 "already exists", missing mandatory fields -> 422, other invalid input -> 400.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from consumers.fanout.countries import CountryFormat
from consumers.omnisend.client import API_VERSION
from consumers.omnisend.mapping import OrderNumberType
from consumers.sandbox.app import Call, Reply, Route, SandboxApp, SandboxConfig, now_iso, route
from consumers.sandbox.core import RateDecision
from consumers.sandbox.omnisend_rules import PATCHABLE, OmnisendRules
from consumers.sandbox.schema import SchemaError
from consumers.sandbox.serving import serve_app

_MSG_400 = "Bad Request - invalid parameters, fields or filters"
_MSG_422 = "Unprocessable Entity - mandatory fields are missing in the payload"
_MESSAGES = {
    401: "Unauthorized - authorization error (invalid basic auth data or API key)",
    403: "Forbidden - the server understood the request, but is refusing it",
    404: "Not found - there is no resource behind the URI",
    408: "Request timeout",
    429: "to many requests (rate limit) - current limit is {limit} requests per minute",
}


@dataclass
class OmnisendConfig(SandboxConfig):
    """Omnisend sandbox settings; defaults follow docs/connectors.md (400/min, 500 products)."""

    token: str = "omnisend-sandbox-key"  # noqa: S105 - a local fake
    rate_limit_per_minute: int | None = 400
    max_products: int = 500
    country_code_format: CountryFormat = "alpha3"
    order_number_type: OrderNumberType = "string"
    duplicate_status: int = 409
    duplicate_message: str = "Order with orderID {order_id} already exists"
    seed_rules: bool = False
    """Also enforce the seed's own rules (status enums, product cap, ...): see `OmnisendRules`."""
    put_upserts: bool = False
    """The spec documents 404 for a PUT to an unknown orderID; True makes PUT create it."""
    batch_max_items: int = 1000
    """v3 `POST /v3/batches` takes at most 1,000 operations."""
    batch_status_reads: int = 1
    """How many `GET /v3/batches/{id}` answer `inProgress` before the batch runs and is
    `finished`: the vendor runs batches asynchronously, so a client must poll."""


class OmnisendSandbox(SandboxApp):
    """In-memory Omnisend; orders keyed by orderID, events kept in arrival order."""

    config: OmnisendConfig

    def __init__(self, config: OmnisendConfig | None = None) -> None:
        config = config or OmnisendConfig()
        self.rules = OmnisendRules(
            max_products=config.max_products,
            country_code_format=config.country_code_format,
            order_number_type=config.order_number_type,
            seed_rules=config.seed_rules,
        )
        self.orders: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.categories: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        super().__init__(config)

    # -- vendor hooks -------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [
            route("GET", "/v3/orders", self.list_orders),
            route("POST", "/v3/orders", self.create_order),
            route("GET", "/v3/orders/{order_id}", self.get_order),
            route("PUT", "/v3/orders/{order_id}", self.replace_order),
            route("PATCH", "/v3/orders/{order_id}", self.patch_order),
            route("DELETE", "/v3/orders/{order_id}", self.delete_order),
            route("POST", "/v5/events", self.post_event),
            route("POST", "/api/events", self.post_event_2026),
            route("POST", "/v3/categories", self.create_category),
            route("GET", "/v3/categories/{category_id}", self.get_category),
            route("PUT", "/v3/categories/{category_id}", self.replace_category),
            route("POST", "/v3/batches", self.create_batch),
            route("GET", "/v3/batches/{batch_id}", self.get_batch),
            route("GET", "/v3/batches/{batch_id}/items", self.get_batch_items),
        ]

    def is_vendor_path(self, path: str) -> bool:
        return path.startswith(("/v3/", "/v5/", "/api/"))

    def authenticated(self, headers: Mapping[str, str]) -> bool:
        """v3/v5 take `X-API-KEY`; the 2026 API `Authorization: Omnisend-API-Key` (checked per route)."""
        if headers.get("x-api-key"):
            return headers.get("x-api-key") == self.config.token
        scheme, _, key = headers.get("authorization", "").partition(" ")
        return scheme == "Omnisend-API-Key" and bool(key) and key.strip() == self.config.token

    def error(self, status: int, message: str, fields: Mapping[str, list[str]] | None = None) -> Reply:
        text = _MESSAGES.get(status, message) if status in (401, 403, 404, 408) else message
        body: dict[str, Any] = {"error": text}
        if fields:
            body["fields"] = dict(fields)
        return Reply(status, body)

    def rate_limited(self, decision: RateDecision) -> Reply:
        limit = decision.limit or self.config.rate_limit_per_minute or 0
        return Reply(429, {"error": _MESSAGES[429].format(limit=limit)}, self.rate_headers(decision))

    def rate_headers(self, decision: RateDecision) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": str(decision.limit),
            "X-Rate-Limit-Remaining": str(max(decision.remaining, 0)),
            "X-Rate-Limit-Reset": str(decision.reset_s),
        }

    def order_keys(self, call: Call) -> set[str]:
        keys: set[str] = set()
        if call.path.startswith("/v3/orders/"):
            keys.add(call.path.removeprefix("/v3/orders/").split("/")[0])
        if isinstance(call.body, dict):
            for holder in (call.body, call.body.get("properties")):
                if isinstance(holder, dict) and isinstance(holder.get("orderID"), str):
                    keys.add(holder["orderID"])
        return keys

    def snapshot(self) -> dict[str, Any]:
        return {
            "orders": dict(self.orders),
            "events": list(self.events),
            "categories": dict(self.categories),
            "batches": {k: _batch_info(b) for k, b in self.batches.items()},
        }

    def clear_records(self) -> None:
        self.orders.clear()
        self.events.clear()
        self.categories.clear()
        self.batches.clear()

    # -- handlers -------------------------------------------------------------------------------
    def _invalid(self, errors: list[SchemaError], *, events: bool = False) -> Reply:
        missing = any(e.keyword == "required" for e in errors)
        status = 400 if events or not missing else 422
        head = _MSG_400 if status == 400 else _MSG_422
        reply = self.error(status, f"{head}: " + "; ".join(str(e) for e in errors))
        if events:
            reply.body["fields"] = [{"field": e.path, "message": e.message} for e in errors]
        return reply

    def create_order(self, call: Call) -> Reply:
        errors = self.rules.create(call.body)
        if errors:
            return self._invalid(errors)
        order_id = call.body["orderID"]
        if order_id in self.orders:
            message = self.config.duplicate_message.format(order_id=order_id)
            return self.error(self.config.duplicate_status, message)
        self.orders[order_id] = self._stored(call.body, order_id)
        return Reply(200, _ack(self.orders[order_id]))

    def replace_order(self, call: Call) -> Reply:
        order_id = call.params["order_id"]
        errors = self.rules.replace(call.body)
        if isinstance(call.body, dict) and call.body.get("orderID", order_id) != order_id:
            errors.append(SchemaError("orderID", "const", "must match the orderID in the path"))
        if errors:
            return self._invalid(errors)
        if order_id not in self.orders and not self.config.put_upserts:
            return self.error(404, "")
        previous = self.orders.get(order_id, {})
        stored = self._stored(call.body, order_id)
        if "contactID" not in call.body and "contactID" in previous:
            stored["contactID"] = previous["contactID"]
        self.orders[order_id] = stored
        return Reply(200, _ack(stored))

    def patch_order(self, call: Call) -> Reply:
        order_id = call.params["order_id"]
        errors = self.rules.patch(call.body)
        if errors:
            return self._invalid(errors)
        if order_id not in self.orders:
            return self.error(404, "")
        # Fields PATCH cannot change are ignored, not refused: the spec does not forbid them.
        self.orders[order_id].update({k: v for k, v in call.body.items() if k in PATCHABLE})
        self.orders[order_id]["updatedAt"] = now_iso(self.clock)
        return Reply(200, _ack(self.orders[order_id]))

    def get_order(self, call: Call) -> Reply:
        order = self.orders.get(call.params["order_id"])
        return Reply(200, order) if order is not None else self.error(404, "")

    def delete_order(self, call: Call) -> Reply:
        if self.orders.pop(call.params["order_id"], None) is None:
            return self.error(404, "")
        return Reply(204)

    def list_orders(self, call: Call) -> Reply:
        try:
            offset = int(call.query.get("offset", "0"))
            limit = int(call.query.get("limit", "100"))
        except ValueError:
            return self.error(400, _MSG_400)
        if offset < 0 or not 1 <= limit <= 250:
            return self.error(400, f"{_MSG_400}: limit is 1..250, offset >= 0")
        rows = [
            o
            for o in self.orders.values()
            if all(
                o.get(k) == call.query[k]
                for k in ("email", "paymentStatus", "fulfillmentStatus")
                if k in call.query
            )
        ]
        page = rows[offset : offset + limit]
        return Reply(
            200, {"orders": page, "paging": {"previous": "", "next": "", "offset": offset, "limit": limit}}
        )

    def create_category(self, call: Call) -> Reply:
        """POST /v3/categories `{categoryID, title}`; a known categoryID is refused like an order."""
        errors = self.rules.category(call.body, with_id=True)
        if errors:
            return self._invalid(errors)
        category_id = call.body["categoryID"]
        if category_id in self.categories:
            message = self.config.duplicate_message.format(order_id=category_id)
            return self.error(self.config.duplicate_status, message)
        self.categories[category_id] = self._category(call.body, category_id)
        return Reply(200, self.categories[category_id])

    def replace_category(self, call: Call) -> Reply:
        category_id = call.params["category_id"]
        errors = self.rules.category(call.body, with_id=False)
        if errors:
            return self._invalid(errors)
        if category_id not in self.categories:
            return self.error(404, "")
        self.categories[category_id] = self._category(call.body, category_id)
        return Reply(200, self.categories[category_id])

    def get_category(self, call: Call) -> Reply:
        category = self.categories.get(call.params["category_id"])
        return Reply(200, category) if category is not None else self.error(404, "")

    def _category(self, body: Mapping[str, Any], category_id: str) -> dict[str, Any]:
        now = now_iso(self.clock)
        return {"categoryID": category_id, "title": body["title"], "createdAt": now, "updatedAt": now}

    # -- batches (v3, docs/connectors.md#omnisend-batches) -------------------------------------
    def create_batch(self, call: Call) -> Reply:
        """POST /v3/batches `{method, endpoint, items}`: queued (`pending`), run later; `{batchID, totalCount}`.

        The sandbox runs orders and categories batches (what the fan-out sends); other
        endpoints the vendor takes (contacts, products, events) are refused as not modelled.
        """
        body = call.body
        if not isinstance(body, dict):
            return self.error(400, f"{_MSG_400}: body must be a JSON object")
        method, endpoint, items = body.get("method"), body.get("endpoint"), body.get("items")
        if method not in ("POST", "PUT"):
            return self.error(400, f"{_MSG_400}: method must be POST or PUT")
        if endpoint not in _BATCH_ENDPOINTS:
            return self.error(400, f"{_MSG_400}: endpoint must be one of {list(_BATCH_ENDPOINTS)}")
        if endpoint not in ("orders", "categories"):
            return self.error(400, f"{_MSG_400}: the sandbox does not model {endpoint} batches")
        if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
            return self.error(422, f"{_MSG_422}: items must be a non-empty array of objects")
        if len(items) > self.config.batch_max_items:
            return self.error(400, f"{_MSG_400}: at most {self.config.batch_max_items} items per batch")
        batch_id = hashlib.sha256(f"{len(self.batches)}:{now_iso(self.clock)}".encode()).hexdigest()[:24]
        self.batches[batch_id] = {
            "batchID": batch_id,
            "method": method,
            "endpoint": endpoint,
            "status": "pending",
            "createdAt": now_iso(self.clock),
            "items": items,
            "results": [],
            "reads": 0,
        }
        return Reply(200, {"batchID": batch_id, "totalCount": len(items)})

    def get_batch(self, call: Call) -> Reply:
        batch = self.batches.get(call.params["batch_id"])
        if batch is None:
            return self.error(404, "")
        batch["reads"] += 1
        if batch["status"] != "finished":
            if batch["reads"] <= self.config.batch_status_reads:
                batch["status"] = "inProgress"
                batch.setdefault("startedAt", now_iso(self.clock))
            else:
                self._run_batch(batch)
        return Reply(200, _batch_info(batch))

    def get_batch_items(self, call: Call) -> Reply:
        batch = self.batches.get(call.params["batch_id"])
        if batch is None:
            return self.error(404, "")
        results = batch["results"]
        return Reply(
            200,
            {
                **_batch_info(batch),
                "errors": [r for r in results if not 200 <= r["responseCode"] < 300],
                "responses": [r for r in results if 200 <= r["responseCode"] < 300],
            },
        )

    def _run_batch(self, batch: dict[str, Any]) -> None:
        """Each item as its own request would be (validation, duplicates, faults per order)."""
        method, endpoint = batch["method"], batch["endpoint"]
        results = []
        for n, item in enumerate(batch["items"], start=1):
            key_name = "orderID" if endpoint == "orders" else "categoryID"
            key = item.get(key_name)
            base = f"/v3/{endpoint}"
            path = base if method == "POST" else f"{base}/{key}"
            params = (
                {} if method == "POST" else {"order_id" if endpoint == "orders" else "category_id": str(key)}
            )
            item_call = Call(method, path, params, {}, {}, item)
            fault = self.faults.match(method, path, self.order_keys(item_call))
            if fault is not None and fault.kind not in ("hang", "reset_connection"):
                reply = self._fault_reply(fault)
            elif method == "PUT" and not isinstance(key, str):
                reply = self._invalid([SchemaError(key_name, "required", "is required for PUT items")])
            else:
                reply = self._item_handler(method, endpoint)(item_call)
            results.append(
                {
                    "itemID": str(n),
                    "request": item,
                    "responseCode": reply.status,
                    "response": reply.body,
                    "status": "finished",
                }
            )
        batch["results"] = results
        batch["status"] = "finished"
        batch.setdefault("startedAt", now_iso(self.clock))
        batch["endedAt"] = now_iso(self.clock)

    def _item_handler(self, method: str, endpoint: str) -> Callable[[Call], Reply]:
        if endpoint == "orders":
            return self.create_order if method == "POST" else self.replace_order
        return self.create_category if method == "POST" else self.replace_category

    def post_event(self, call: Call) -> Reply:
        errors = self.rules.event(call.body)
        if errors:
            return self._invalid(errors, events=True)
        self.events.append({**call.body, "receivedAt": now_iso(self.clock)})
        return Reply(202, {})

    def post_event_2026(self, call: Call) -> Reply:
        """`POST /api/events` (2026-03-15): version header required, errors as RFC 9457 problems."""
        if call.headers.get("omnisend-version") != API_VERSION:
            return _problem(
                400,
                "Invalid API version",
                f"The Omnisend-Version header is required; supported: {API_VERSION}",
                [{"field": "Omnisend-Version", "code": "required", "message": "is required"}],
                call.path,
            )
        if not call.headers.get("authorization", "").startswith("Omnisend-API-Key "):
            return _problem(401, "Unauthorized", "Use Authorization: Omnisend-API-Key <key>", [], call.path)
        errors = self.rules.event(call.body)
        if errors:
            fields = [{"field": e.path, "code": e.keyword, "message": e.message} for e in errors]
            return _problem(400, "Validation failed", "The request body is invalid", fields, call.path)
        self.events.append({**call.body, "receivedAt": now_iso(self.clock)})
        return Reply(202, {})

    def _stored(self, body: Mapping[str, Any], order_id: str) -> dict[str, Any]:
        stored = {**body, "orderID": order_id}
        identity = str(body.get("email") or body.get("phone") or "")
        if identity and "contactID" not in stored:
            stored["contactID"] = hashlib.sha256(identity.encode()).hexdigest()[:24]
        stored.setdefault("updatedAt", now_iso(self.clock))
        return stored


def _problem(status: int, title: str, detail: str, errors: list[dict[str, str]], instance: str) -> Reply:
    """An RFC 9457 problem as the 2026-03-15 API answers (every field error at once)."""
    body = {
        "type": f"https://api-docs.omnisend.com/problems/{status}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "errors": errors,
    }
    return Reply(status, body, {"Content-Type": "application/problem+json"})


_BATCH_ENDPOINTS = ("contacts", "orders", "products", "events", "categories")


def _batch_info(batch: Mapping[str, Any]) -> dict[str, Any]:
    """`GET /v3/batches/{id}`: status and counts (finishedCount includes the failed ones)."""
    results = batch.get("results", [])
    info = {
        k: batch[k]
        for k in ("batchID", "method", "endpoint", "status", "createdAt", "startedAt", "endedAt")
        if k in batch
    }
    info["totalCount"] = len(batch["items"])
    info["finishedCount"] = len(results)
    info["errorsCount"] = sum(1 for r in results if not 200 <= r["responseCode"] < 300)
    return info


def _ack(order: Mapping[str, Any]) -> dict[str, Any]:
    """POST/PUT/PATCH answer: `{orderID, email, phone}` (spec)."""
    return {k: order[k] for k in ("orderID", "email", "phone") if k in order}


def create_app(config: OmnisendConfig | None = None) -> OmnisendSandbox:
    """The Omnisend sandbox as an ASGI app."""
    return OmnisendSandbox(config)


async def serve(host: str = "127.0.0.1", port: int = 8082, config: OmnisendConfig | None = None) -> None:
    """Run the Omnisend sandbox in the foreground (for `ledger sandbox omnisend`)."""
    await serve_app(create_app(config), host, port)

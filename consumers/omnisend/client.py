"""Thin async client for Omnisend v3 orders and v5 events (docs/connectors.md#omnisend).

Why thin: the worker owns retries, the shared 400/min budget and parking; this layer speaks
the vendor's paths and classifies answers. A duplicate `POST /v3/orders` is not an upsert:
it comes back as `Permanent(reason="already_exists")` so the worker switches to PUT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from consumers.http import (
    AuthFailure,
    HeaderAuth,
    Outcome,
    Permanent,
    VendorClient,
    classify_response,
    encode_json,
    send,
    strip_suffix,
)
from ledger_kernel.settings import DestinationSettings

ORDERS = "/v3/orders"
CATEGORIES = "/v3/categories"
BATCHES = "/v3/batches"
EVENTS = "/api/events"
API_VERSION = "2026-03-15"
"""Omnisend's current API: `/api/...`, `Authorization: Omnisend-API-Key`, `Omnisend-Version` required."""

PATCHABLE_FIELDS = frozenset(
    {
        "trackingCode",
        "courierTitle",
        "courierUrl",
        "paymentStatus",
        "fulfillmentStatus",
        "canceledDate",
        "cancelReason",
        "cartID",
    }
)
"""The only fields `PATCH /v3/orders/{orderID}` accepts (docs/connectors.md#omnisend-v3-orders)."""


def build_http_client(
    settings: DestinationSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for Omnisend: base URL (host root or `.../v3`), key, timeout.

    Orders mode speaks v3 (`X-API-KEY`); events mode speaks the 2026-03-15 API, which takes the
    key as `Authorization: Omnisend-API-Key <key>` and refuses a request without
    `Omnisend-Version` (docs/connectors.md).
    """
    if not settings.base_url or settings.token is None:
        raise ValueError("Omnisend needs base_url and token")
    key = settings.token.get_secret_value()
    headers = {"Accept": "application/json"}
    if settings.mode == "events":
        auth = HeaderAuth("Authorization", f"Omnisend-API-Key {key}")
        headers["Omnisend-Version"] = API_VERSION
    else:
        auth = HeaderAuth("X-API-KEY", key)
    return httpx.AsyncClient(
        base_url=strip_suffix(strip_suffix(settings.base_url, "/v3"), "/api"),
        auth=auth,
        headers=headers,
        timeout=httpx.Timeout(settings.timeout_s),
        follow_redirects=False,
        transport=transport,
    )


def _vendor_outcome(outcome: Outcome) -> Outcome:
    """Omnisend's readings of a generic outcome: duplicate orderID, 403 that may be throttling."""
    if isinstance(outcome, Permanent) and _is_already_exists(outcome):
        return Permanent(status=outcome.status, reason="already_exists", body=outcome.body)
    if isinstance(outcome, AuthFailure) and outcome.status == 403:
        return AuthFailure(status=403, body=outcome.body, possibly_throttled=True)
    return outcome


def _batch_id(body: Any) -> str | None:
    value = body["batchID"]
    return value if isinstance(value, str) and value else None


def _order_id(body: Any) -> str | None:
    value = body["orderID"]
    return value if isinstance(value, str) else None


def _is_already_exists(outcome: Permanent) -> bool:
    """The duplicate-orderID status is unconfirmed (409 most likely): also read the message."""
    if outcome.status == 409:
        return True
    text = outcome.body.get("error", "") if isinstance(outcome.body, dict) else str(outcome.body)
    return isinstance(text, str) and "already exist" in text.lower()


class OmnisendClient(VendorClient):
    """Omnisend calls over an injected client; every method returns an `Outcome`.

    `Success.remote_id` is the orderID echoed by order writes. 403 is reported as
    `AuthFailure(possibly_throttled=True)` because v3 also uses it for error throttling.
    """

    async def _call(self, method: str, path: str, body: Any = None, *, with_id: bool = False) -> Outcome:
        outcome = await send(
            self._http,
            method,
            path,
            json_body=body,
            max_bytes=self._max,
            deadline_s=self._deadline_s,
            remote_id=_order_id if with_id else None,
        )
        return _vendor_outcome(outcome)

    async def create_batch(self, method: str, endpoint: str, items: Sequence[Mapping[str, Any]]) -> Outcome:
        """POST /v3/batches `{method, endpoint, items}`: queued, not done; `remote_id` is its batchID."""
        body = {"method": method, "endpoint": endpoint, "items": [dict(i) for i in items]}
        outcome = await send(
            self._http,
            "POST",
            BATCHES,
            json_body=body,
            max_bytes=self._max,
            deadline_s=self._deadline_s,
            remote_id=_batch_id,
        )
        return _vendor_outcome(outcome)

    async def get_batch(self, batch_id: str) -> Outcome:
        """GET /v3/batches/{batchID}: `status` pending | inProgress | finished | stopped, counts."""
        return await self._call("GET", f"{BATCHES}/{quote(batch_id, safe='')}")

    async def get_batch_items(self, batch_id: str) -> Outcome:
        """GET /v3/batches/{batchID}/items: `responses[]` and `errors[]`, each item with its
        `request`, `responseCode` and `response` (the answer the single call would have had)."""
        return await self._call("GET", f"{BATCHES}/{quote(batch_id, safe='')}/items")

    @staticmethod
    def item_outcome(response_code: int, response: Any) -> Outcome:
        """One batch item's result classified exactly as the same single call's answer."""
        raw = b"" if response is None else encode_json(response)
        return _vendor_outcome(classify_response(response_code, {}, raw))

    async def create_order(self, order: Mapping[str, Any]) -> Outcome:
        """POST /v3/orders: create-only; a duplicate gives Permanent(reason="already_exists")."""
        return await self._call("POST", ORDERS, dict(order), with_id=True)

    async def replace_order(self, order_id: str, order: Mapping[str, Any]) -> Outcome:
        """PUT /v3/orders/{orderID}: full replace, so always send the whole recomputed order."""
        return await self._call("PUT", _order_path(order_id), {**order, "orderID": order_id}, with_id=True)

    async def patch_order(self, order_id: str, changes: Mapping[str, Any]) -> Outcome:
        """PATCH /v3/orders/{orderID}: status and tracking fields only (others raise here)."""
        extra = set(changes) - PATCHABLE_FIELDS
        if extra:
            raise ValueError(f"not patchable on Omnisend v3: {sorted(extra)}")
        return await self._call("PATCH", _order_path(order_id), dict(changes))

    async def get_order(self, order_id: str) -> Outcome:
        """GET /v3/orders/{orderID}; 404 comes back as Permanent(reason="not_found")."""
        return await self._call("GET", _order_path(order_id), with_id=True)

    async def delete_order(self, order_id: str) -> Outcome:
        """DELETE /v3/orders/{orderID} (204); the caller treats 404 as already gone."""
        return await self._call("DELETE", _order_path(order_id))

    async def create_category(self, category: Mapping[str, Any]) -> Outcome:
        """POST /v3/categories `{categoryID, title}` (what Omnisend's WooCommerce plugin sends)."""
        return await self._call("POST", CATEGORIES, dict(category))

    async def replace_category(self, category_id: str, category: Mapping[str, Any]) -> Outcome:
        """PUT /v3/categories/{categoryID}: the plugin's fallback when the POST is refused."""
        if not category_id:
            raise ValueError("categoryID is required")
        return await self._call("PUT", f"{CATEGORIES}/{quote(category_id, safe='')}", dict(category))

    async def send_event(self, event: Mapping[str, Any]) -> Outcome:
        """POST /api/events (202 Accepted = queued, not processed). Not deduplicated for live events.

        Errors come as RFC 9457 problem+json (`errors[{field, code, message}]`), kept whole when parked.
        """
        return await self._call("POST", EVENTS, dict(event))


def _order_path(order_id: str) -> str:
    if not order_id:
        raise ValueError("orderID is required")
    return f"{ORDERS}/{quote(order_id, safe='')}"

"""Thin async client for the Omneo v3 calls the fan-out worker makes (docs/connectors.md#omneo).

Why thin: the worker owns retries, rate budget and parking; this layer only speaks the
vendor's paths and turns each answer into an `Outcome`. Omneo orders have no upsert, so
`create_order` is never safe to blind-retry: on an ambiguous outcome use `find_order` /
`get_order` first. Transactions are idempotent through `update-create` + `external_id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from consumers.http import HeaderAuth, Outcome, VendorClient, send, strip_suffix
from ledger_kernel.settings import DestinationSettings

API = "/api/v3"


def build_http_client(
    settings: DestinationSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for Omneo: base URL (host root or `.../api/v3`), bearer token, timeout."""
    if not settings.base_url or settings.token is None:
        raise ValueError("Omneo needs base_url and token")
    return httpx.AsyncClient(
        base_url=strip_suffix(settings.base_url, API),
        auth=HeaderAuth("Authorization", f"Bearer {settings.token.get_secret_value()}"),
        headers={"Accept": "application/json"},
        timeout=httpx.Timeout(settings.timeout_s),
        follow_redirects=False,
        transport=transport,
    )


def _data_id(body: Any) -> str | None:
    """Omneo wraps single records in `{"data": {...}}`; ids are integers."""
    value = body["data"]["id"]
    return None if value is None or isinstance(value, bool) else str(value)


def _matching_id(body: Any, external_id: str) -> str | None:
    """The listed order with our external_id; "" for an empty list; None (unusable) otherwise.

    Why not the first row: a list that ignores the filter returns other orders, and adopting
    one would send this order's updates to someone else's order.
    """
    rows = body["data"]
    if not isinstance(rows, list):
        return None
    if not rows:
        return ""
    return next((str(r["id"]) for r in rows if r.get("external_id") == external_id), None)


class OmneoClient(VendorClient):
    """Omneo calls over an injected client; every method returns an `Outcome`.

    `Success.remote_id` is the Omneo numeric id (as a string) for order/transaction writes and
    reads; `find_order` returns "" when nothing matched.
    """

    async def _call(self, method: str, path: str, body: Any = None, *, with_id: bool = True) -> Outcome:
        return await send(
            self._http,
            method,
            API + path,
            json_body=body,
            max_bytes=self._max,
            deadline_s=self._deadline_s,
            remote_id=_data_id if with_id else None,
        )

    async def create_order(self, order: Mapping[str, Any]) -> Outcome:
        """POST /orders: not idempotent; persist the returned id (remote_id)."""
        return await self._call("POST", "/orders", dict(order))

    async def get_order(self, order_id: int | str) -> Outcome:
        """GET /orders/{id}; 404 comes back as Permanent(reason="not_found")."""
        return await self._call("GET", f"/orders/{_int_id(order_id)}")

    async def find_order(self, external_id: str) -> Outcome:
        """Look an order up by our external id before re-POSTing after an ambiguous create.

        Uses `GET /orders?filter[external_id]=` which docs/connectors.md#open-questions marks unconfirmed [X];
        `remote_id` is the id of the order whose external_id is ours, or "" when none is
        listed; a list of only other orders is an unusable answer (retried, then parked).
        """
        return await send(
            self._http,
            "GET",
            f"{API}/orders",
            params={"filter[external_id]": external_id},
            max_bytes=self._max,
            deadline_s=self._deadline_s,
            remote_id=lambda body: _matching_id(body, external_id),
        )

    async def update_order(self, order_id: int | str, changes: Mapping[str, Any]) -> Outcome:
        """PUT /orders/{id}: a partial update (merge), so send only what changed."""
        return await self._call("PUT", f"/orders/{_int_id(order_id)}", dict(changes))

    async def delete_order(self, order_id: int | str) -> Outcome:
        """DELETE /orders/{id}; the caller treats 404 as already gone."""
        return await self._call("DELETE", f"/orders/{_int_id(order_id)}", with_id=False)

    async def create_transaction(self, transaction: Mapping[str, Any]) -> Outcome:
        """POST /transactions (not idempotent; prefer `upsert_transaction`)."""
        return await self._call("POST", "/transactions", dict(transaction))

    async def upsert_transaction(self, transaction: Mapping[str, Any]) -> Outcome:
        """POST /transactions/update-create: matched by `external_id`, so retries are safe."""
        if not transaction.get("external_id"):
            raise ValueError("update-create needs a deterministic external_id")
        return await self._call("POST", "/transactions/update-create", dict(transaction))

    async def void_transaction(self, transaction: Mapping[str, Any]) -> Outcome:
        """Void (never delete) a transaction: re-upsert the same `external_id` with `is_void: true`."""
        return await self.upsert_transaction({**transaction, "is_void": True})

    async def get_transaction_by_external_id(self, external_id: str) -> Outcome:
        """GET /transactions/external/{externalId}."""
        return await self._call("GET", f"/transactions/external/{quote(external_id, safe='')}")


def _int_id(order_id: int | str) -> int:
    """Omneo ids are integers; refuse anything else before it becomes a path."""
    if isinstance(order_id, bool):
        raise ValueError("Omneo ids are integers")
    return int(order_id)

"""The two destinations behind one small interface: map a group of events, perform one call.

Why an adapter per destination: the worker's loop (inbox, park, retries, budget) is the same
for both; what differs is the mapping, the client method per call kind, and how a vendor's
quirks turn into the generic outcomes (Omnisend's duplicate POST -> PUT, DELETE 404 = done).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
import httpx

from consumers.fanout.applicability import NotApplicable
from consumers.fanout.categories import CategoryBook
from consumers.fanout.delivery_store import DeliveryRow
from consumers.fanout.mapping_types import REMOTE_ID, DestinationCall, Envelope
from consumers.http import Outcome, Permanent, Success
from consumers.omneo import mapping as omneo_mapping
from consumers.omneo.client import OmneoClient
from consumers.omnisend import mapping as omnisend_mapping
from consumers.omnisend.client import OmnisendClient
from ledger_kernel.settings import DestinationSettings

__all__ = [
    "POST_THEN_PUT_STATUSES",
    "Destination",
    "OmneoDestination",
    "OmnisendDestination",
    "build_destination",
]

POST_THEN_PUT_STATUSES = frozenset({400, 404, 409, 422})
"""Answers to an Omnisend order POST after which its WooCommerce plugin tries a PUT."""


class Destination(Protocol):
    name: str

    def not_applicable(self, envs: Sequence[Envelope], row: DeliveryRow) -> NotApplicable | None:
        """Why the destination cannot take the order as it is after `envs`, or None."""
        ...

    def map(self, envs: Sequence[Envelope], row: DeliveryRow) -> list[DestinationCall]: ...

    async def perform(self, call: DestinationCall, row: DeliveryRow) -> Outcome: ...

    def applied(self, call: DestinationCall, outcome: Success, row: DeliveryRow) -> None: ...


def _fill(value: Any, remote_id: str | None) -> Any:
    if value == REMOTE_ID:
        if remote_id is None:
            raise ValueError("call needs the remote id, which is not known yet")
        return int(remote_id) if remote_id.isdigit() else remote_id
    return value


class OmneoDestination:
    """Omneo orders + transactions. Order create is handled by the deliverer (intent + lookup)."""

    name = "omneo"

    def __init__(self, client: OmneoClient, options: omneo_mapping.OmneoOptions | None = None) -> None:
        self.client = client
        self.options = options or omneo_mapping.OmneoOptions()

    def not_applicable(self, envs: Sequence[Envelope], row: DeliveryRow) -> NotApplicable | None:
        return omneo_mapping.not_applicable(envs[-1].order) if envs else None

    def map(self, envs: Sequence[Envelope], row: DeliveryRow) -> list[DestinationCall]:
        state = omneo_mapping.OmneoState(row.remote_id, row.sent)
        return omneo_mapping.map_batch(envs, state, self.options)

    async def perform(self, call: DestinationCall, row: DeliveryRow) -> Outcome:
        body = None if call.body is None else {k: _fill(v, row.remote_id) for k, v in call.body.items()}
        remote = row.remote_id or ""
        if call.kind == "omneo.order.create":
            return await self.client.create_order(body or {})
        if call.kind == "omneo.order.update":
            return await self.client.update_order(remote, body or {})
        if call.kind == "omneo.order.delete":
            outcome = await self.client.delete_order(remote)
            gone = isinstance(outcome, Permanent) and outcome.status == 404
            return Success(status=404) if gone else outcome
        if call.kind == "omneo.transaction.upsert":
            return await self.client.upsert_transaction(body or {})
        raise ValueError(f"not an Omneo call: {call.kind}")

    def applied(self, call: DestinationCall, outcome: Success, row: DeliveryRow) -> None:
        if call.kind == "omneo.order.create":
            row.remote_id = outcome.remote_id
            row.remote_exists = True
            row.status = "ok"
        elif call.kind == "omneo.order.delete":
            row.remote_exists = False
        row.sent.update(call.remember)

    async def find_order(self, order_id: str) -> Outcome:
        """Reconcile an ambiguous create: our external_id is the ledger order id."""
        return await self.client.find_order(order_id)


class OmnisendDestination:
    """Omnisend v3 orders (POST/PUT/PATCH/DELETE) or v5 events, by `settings.omnisend.mode`."""

    name = "omnisend"

    def __init__(
        self,
        client: OmnisendClient,
        options: omnisend_mapping.OmnisendOptions,
        categories: CategoryBook | None = None,
    ) -> None:
        self.client = client
        self.options = options
        self.categories = categories or CategoryBook(None, self.name)

    def not_applicable(self, envs: Sequence[Envelope], row: DeliveryRow) -> NotApplicable | None:
        """Only while Omnisend holds no order of ours: once it has one (orders mode), updates
        go by orderID whatever the contact fields say. In events mode it never holds an order,
        and every event needs a contact, so the rule holds for each one."""
        if not envs or row.remote_exists:
            return None
        return omnisend_mapping.not_applicable(envs[-1].order)

    def map(self, envs: Sequence[Envelope], row: DeliveryRow) -> list[DestinationCall]:
        state = omnisend_mapping.OmnisendState(row.remote_exists, row.sent, self.categories.known)
        catch_up = row.not_applicable is not None
        return omnisend_mapping.map_batch(envs, state, self.options, catch_up=catch_up)

    async def perform(self, call: DestinationCall, row: DeliveryRow) -> Outcome:
        body = call.body or {}
        if call.kind == "omnisend.category.create":
            return await self._category(call.key, body)
        if call.kind == "omnisend.order.create":
            return await self._create(call.key, body)
        if call.kind in ("omnisend.order.replace", "omnisend.order.patch"):
            if call.kind == "omnisend.order.patch":
                outcome = await self.client.patch_order(call.key, body)
            else:
                outcome = await self.client.replace_order(call.key, body)
            if isinstance(outcome, Permanent) and outcome.reason == "not_found":
                # Gone on the Omnisend side (deleted in the UI, purged): create it again whole.
                row.remote_exists = False
                return await self._create(call.key, call.create_body or body)
            return outcome
        if call.kind == "omnisend.order.delete":
            outcome = await self.client.delete_order(call.key)
            gone = isinstance(outcome, Permanent) and outcome.status == 404
            return Success(status=404) if gone else outcome
        if call.kind == "omnisend.event":
            return await self.client.send_event(body)
        raise ValueError(f"not an Omnisend call: {call.kind}")

    async def settle(self, call: DestinationCall, row: DeliveryRow, item: Outcome) -> Outcome:
        """An order write's batch item answer, finished as the single call would have been.

        A refused POST on the plugin's statuses becomes a PUT (as in `_create`); a PUT to an
        order Omnisend lost becomes a POST of the whole order; any other refusal is final
        (its order parks, no other). An item that hit a retryable answer (408, 429, 5xx or a
        403, which Omnisend's plugin also re-queues) is sent again alone.
        """
        if isinstance(item, Success):
            return item
        if isinstance(item, Permanent) and call.kind == "omnisend.order.create":
            if item.reason == "already_exists" or item.status in POST_THEN_PUT_STATUSES:
                replaced = await self.client.replace_order(call.key, call.body or {})
                return item if isinstance(replaced, Permanent) and replaced.status == 404 else replaced
            return item
        if isinstance(item, Permanent) and call.kind == "omnisend.order.replace":
            if item.reason == "not_found":
                row.remote_exists = False
                return await self._create(call.key, call.create_body or call.body or {})
            return item
        return await self.perform(call, row)

    async def _create(self, order_id: str, body: dict[str, Any]) -> Outcome:
        """POST, and on any answer Omnisend may give for an order it already has, PUT.

        Omnisend does not document the duplicate-orderID answer; its own WooCommerce plugin
        retries a refused POST as a PUT on 400, 404, 409 and 422 (docs/connectors.md), so we
        do too. If the PUT answers 404 the order really is not there and the POST's own
        refusal is the one worth parking with.
        """
        outcome = await self.client.create_order(body)
        if isinstance(outcome, Permanent) and (
            outcome.reason == "already_exists" or outcome.status in POST_THEN_PUT_STATUSES
        ):
            replaced = await self.client.replace_order(order_id, body)
            if isinstance(replaced, Permanent) and replaced.status == 404:
                return outcome
            return replaced
        return outcome

    async def _category(self, category_id: str, body: dict[str, Any]) -> Outcome:
        """Create a category once: skip known ones; POST, then PUT on the plugin's statuses."""
        if await self.categories.has(category_id):
            return Success(status=200)
        outcome = await self.client.create_category(body)
        if isinstance(outcome, Permanent) and (
            outcome.reason == "already_exists" or outcome.status in POST_THEN_PUT_STATUSES
        ):
            replaced = await self.client.replace_category(category_id, body)
            outcome = outcome if isinstance(replaced, Permanent) and replaced.status == 404 else replaced
        if isinstance(outcome, Success):
            await self.categories.remember(category_id, str(body.get("title", category_id)))
        return outcome

    def applied(self, call: DestinationCall, outcome: Success, row: DeliveryRow) -> None:
        if call.kind == "omnisend.category.create":
            return
        if call.kind in ("omnisend.order.create", "omnisend.order.replace", "omnisend.order.patch"):
            row.remote_exists = True
            row.remote_id = call.key
        elif call.kind == "omnisend.order.delete":
            row.remote_exists = False
        row.sent.update(call.remember)


def build_destination(
    name: str,
    settings: DestinationSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    pool: asyncpg.Pool | None = None,
) -> tuple[Destination, httpx.AsyncClient]:
    """The destination adapter and the HTTP client it owns (close it on shutdown).

    `pool` keeps what is shared by every order (Omnisend's categories) in PostgreSQL.
    """
    if name == "omneo":
        from consumers.omneo.client import build_http_client as omneo_http

        http = omneo_http(settings, transport=transport)
        omneo_options = omneo_mapping.OmneoOptions(default_location_id=settings.default_location_id)
        return OmneoDestination(OmneoClient.from_settings(settings, http), omneo_options), http
    if name == "omnisend":
        from consumers.omnisend.client import build_http_client as omnisend_http

        if settings.mode not in ("orders", "events"):
            raise ValueError(f"omnisend mode must be 'orders' or 'events', not {settings.mode!r}")
        http = omnisend_http(settings, transport=transport)
        options = omnisend_mapping.OmnisendOptions(
            mode="events" if settings.mode == "events" else "orders",
            country_format=settings.country_code_format,
            order_number=settings.order_number_type,
        )
        book = CategoryBook(pool, name)
        return OmnisendDestination(OmnisendClient.from_settings(settings, http), options, book), http
    raise ValueError(f"unknown destination {name!r} (omneo or omnisend)")

"""The two destinations behind one small interface: map a group of events, perform one call.

Why an adapter per destination: the worker's loop (inbox, park, retries, budget) is the same
for both; what differs is the mapping, the client method per call kind, and how a vendor's
quirks turn into the generic outcomes (Omnisend's duplicate POST -> PUT, DELETE 404 = done).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import httpx

from consumers.fanout.applicability import NotApplicable
from consumers.fanout.delivery_store import DeliveryRow
from consumers.fanout.envelope import REMOTE_ID, DestinationCall, Envelope
from consumers.http import Outcome, Permanent, Success
from consumers.omneo import mapping as omneo_mapping
from consumers.omneo.client import OmneoClient
from consumers.omnisend import mapping as omnisend_mapping
from consumers.omnisend.client import OmnisendClient
from ledger_kernel.settings import DestinationSettings

__all__ = ["Destination", "OmneoDestination", "OmnisendDestination", "build_destination"]


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

    def __init__(self, client: OmneoClient) -> None:
        self.client = client

    def not_applicable(self, envs: Sequence[Envelope], row: DeliveryRow) -> NotApplicable | None:
        return omneo_mapping.not_applicable(envs[-1].order) if envs else None

    def map(self, envs: Sequence[Envelope], row: DeliveryRow) -> list[DestinationCall]:
        return omneo_mapping.map_batch(envs, omneo_mapping.OmneoState(row.remote_id, row.sent))

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

    def __init__(self, client: OmnisendClient, options: omnisend_mapping.OmnisendOptions) -> None:
        self.client = client
        self.options = options

    def not_applicable(self, envs: Sequence[Envelope], row: DeliveryRow) -> NotApplicable | None:
        """Only while Omnisend holds no order of ours: once it has one (orders mode), updates
        go by orderID whatever the contact fields say. In events mode it never holds an order,
        and every event needs a contact, so the rule holds for each one."""
        if not envs or row.remote_exists:
            return None
        return omnisend_mapping.not_applicable(envs[-1].order)

    def map(self, envs: Sequence[Envelope], row: DeliveryRow) -> list[DestinationCall]:
        state = omnisend_mapping.OmnisendState(row.remote_exists, row.sent)
        catch_up = row.not_applicable is not None
        return omnisend_mapping.map_batch(envs, state, self.options, catch_up=catch_up)

    async def perform(self, call: DestinationCall, row: DeliveryRow) -> Outcome:
        body = call.body or {}
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

    async def _create(self, order_id: str, body: dict[str, Any]) -> Outcome:
        outcome = await self.client.create_order(body)
        if isinstance(outcome, Permanent) and outcome.reason == "already_exists":
            # Created before (e.g. a crash right after the 2xx): the order exists, so
            # replace it with this state; the effect is the same as the lost create.
            return await self.client.replace_order(order_id, body)
        return outcome

    def applied(self, call: DestinationCall, outcome: Success, row: DeliveryRow) -> None:
        if call.kind in ("omnisend.order.create", "omnisend.order.replace", "omnisend.order.patch"):
            row.remote_exists = True
            row.remote_id = call.key
        elif call.kind == "omnisend.order.delete":
            row.remote_exists = False
        row.sent.update(call.remember)


def build_destination(
    name: str, settings: DestinationSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> tuple[Destination, httpx.AsyncClient]:
    """The destination adapter and the HTTP client it owns (close it on shutdown)."""
    if name == "omneo":
        from consumers.omneo.client import build_http_client as omneo_http

        http = omneo_http(settings, transport=transport)
        return OmneoDestination(OmneoClient.from_settings(settings, http)), http
    if name == "omnisend":
        from consumers.omnisend.client import build_http_client as omnisend_http

        if settings.mode not in ("orders", "events"):
            raise ValueError(f"omnisend mode must be 'orders' or 'events', not {settings.mode!r}")
        http = omnisend_http(settings, transport=transport)
        options = omnisend_mapping.OmnisendOptions(mode="events" if settings.mode == "events" else "orders")
        return OmnisendDestination(OmnisendClient.from_settings(settings, http), options), http
    raise ValueError(f"unknown destination {name!r} (omneo or omnisend)")

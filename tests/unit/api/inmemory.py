"""The write side's HTTP API on `InMemoryEventStore`: no database, no broker.

The app is `ledger.api.app.create_app` with `store=` and a fixed token table, served in-process
over httpx's ASGI transport; the PostgreSQL-backed twin is `tests/integration/api/conftest.py`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI

from ledger.api.app import create_app, event_registry
from ledger.api.auth import Principal
from ledger.store import InMemoryEventStore
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import ApiSettings, Settings

#: token -> (name, scopes); `client_id` is the name.
TOKENS = {
    "lgr_writer-reader-auditor": ("checkout", frozenset({"orders:write", "orders:read", "audit:read"})),
    "lgr_reader-only": ("dashboard", frozenset({"orders:read"})),
    "lgr_other-client": ("other-shop", frozenset({"orders:write", "orders:read"})),
}


class FixedTokens:
    """An `Authenticator` over a fixed table (the production one reads `api_tokens`)."""

    async def authenticate(self, token: str) -> Principal | None:
        entry = TOKENS.get(token)
        if entry is None:
            return None
        name, scopes = entry
        return Principal(f"id-{name}", name, name, scopes)


@dataclass
class MemoryApi:
    app: FastAPI
    client: httpx.AsyncClient
    store: InMemoryEventStore

    @staticmethod
    def auth(token: str = "lgr_writer-reader-auditor", **extra: str) -> dict[str, str]:  # noqa: S107 - a test token
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **extra}


@asynccontextmanager
async def memory_api(**api: Any) -> AsyncIterator[MemoryApi]:
    """An app on a fresh in-memory store; `api` overrides `ApiSettings` fields."""
    store = InMemoryEventStore(event_registry())
    settings = Settings(database_url="postgresql://unused@127.0.0.1:1/unused", api=ApiSettings(**api))
    app = create_app(settings, store=store, tokens=FixedTokens(), metrics=Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            yield MemoryApi(app, client, store)


def order_body(external_id: str | None = None, total: str = "199.95") -> bytes:
    """A valid `PlaceOrder` body (money as exact JSON numbers)."""
    external = f'"external_id": "{external_id}", ' if external_id else ""
    return (
        f'{{{external}"total": {total}, "status": "pending", "items": [{{"name": "Trench Coat",'
        f' "product_variant_id": 441200, "quantity": 1, "price_current": {total},'
        f' "price_sell": {total}, "price_original": {total}}}]}}'
    ).encode()


def body(response: httpx.Response) -> Any:
    return json.loads(response.content, parse_float=Decimal)

"""An API app with a key-encryption key set (personal data sealed), on a fresh migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
from pydantic import SecretStr

from ledger.api.auth import TokenStore
from ledger.privacy import Keyring
from ledger_app.api import create_app
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import PrivacySettings, Settings
from projections.setup import install_projections
from tests.integration.api.conftest import Api, make_tokens


@dataclass
class PrivacyApi(Api):
    admin: str = ""
    kek: str = ""
    database_url: str = ""

    def privacy(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    async def place(self, **fields: Any) -> dict[str, Any]:
        body = {
            "currency": "AUD",
            "total": 110,
            "items": [{"name": "Trench Coat", "quantity": 1, "price_sell": 110, "sku": "TC-1"}],
            **fields,
        }
        response = await self.client.post("/api/v3/orders", json=body, headers=self.auth())
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


def person(first: str, last: str, email: str, phone: str, street: str) -> dict[str, Any]:
    """The personal fields of one customer, as an order body carries them."""
    address = {
        "first_name": first,
        "last_name": last,
        "company": f"{last} Holdings",
        "phone": phone,
        "address": street,
        "city": "Ballarat",
        "postal_code": "3350",
        "state": "Victoria",
        "country_code": "AU",
    }
    return {
        "email": email,
        "phone": phone,
        "first_name": first,
        "last_name": last,
        "billing_address": address,
        "shipping_address": address,
        "note": f"leave with {first} at the back door",
    }


ALICE = person("Alicetta", "Quorrington", "alicetta.q@example.org", "+61400111222", "17 Zanzibar Lane")
BOB = person("Bobbin", "Vexworth", "bobbin.v@example.org", "+61400333444", "9 Yarraville Close")


async def dump_text(pool: asyncpg.Pool) -> str:
    """Every row of every table in the database as text: what `pg_dump --data-only` would hold."""
    tables = await pool.fetch(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    parts: list[str] = []
    for table in tables:
        rows = await pool.fetch(f"SELECT t::text AS row FROM {table['name']} t")
        parts.extend(row["row"] for row in rows)
    return "\n".join(parts)


def plain_values(customer: dict[str, Any]) -> list[str]:
    """The distinctive personal strings of a customer (to search dumps and outputs for)."""
    address = customer["billing_address"]
    return [
        customer["email"],
        customer["phone"],
        customer["first_name"],
        customer["last_name"],
        address["address"],
        address["company"],
    ]


@pytest_asyncio.fixture(loop_scope="session")
async def papi(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[PrivacyApi]:
    await install_projections(database_url)
    kek = Keyring.generate_base64()
    privacy = PrivacySettings(kek=SecretStr(kek))
    settings = Settings(database_url=database_url, privacy=privacy)
    app = create_app(settings, pool=pool, metrics=Metrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ledger.test") as client:
            tokens = await make_tokens(pool)
            admin = (await TokenStore(pool).create("dpo", ["privacy:admin"]))[0]
            yield PrivacyApi(app, client, pool, tokens, admin, kek, database_url)

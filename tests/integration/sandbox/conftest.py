"""Each test module starts one sandbox per vendor on a loopback port (reset before every test),
with a manual clock and the real outbound clients built from `DestinationSettings`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from consumers.omneo.client import OmneoClient
from consumers.omneo.client import build_http_client as omneo_http
from consumers.omnisend.client import OmnisendClient
from consumers.omnisend.client import build_http_client as omnisend_http
from consumers.sandbox import (
    ManualClock,
    OmneoConfig,
    OmnisendConfig,
    OmnisendSandbox,
    SandboxApp,
    create_omneo_app,
    create_omnisend_app,
    run_in_background,
)
from ledger_kernel.settings import DestinationSettings

OMNEO_TOKEN = "omneo-test-token-ABC123"
OMNISEND_KEY = "omnisend-test-key-XYZ789"
TIMEOUT_S = 1.0


@dataclass
class Running:
    """A running sandbox: raw authenticated `http`, unauthenticated `control`, and the clock."""

    url: str
    clock: ManualClock
    http: httpx.AsyncClient
    control: httpx.AsyncClient

    async def state(self) -> Any:
        return (await self.control.get("/_sandbox/state")).json()

    async def requests(self, since: int = 0) -> list[dict[str, Any]]:
        reply = await self.control.get("/_sandbox/requests", params={"since": since})
        rows: list[dict[str, Any]] = reply.json()["requests"]
        return rows

    async def fault(self, spec: dict[str, Any]) -> None:
        reply = await self.control.post("/_sandbox/faults", json=spec)
        assert reply.status_code == 201, reply.text


def settings(url: str, token: str) -> DestinationSettings:
    return DestinationSettings(base_url=url, token=SecretStr(token), timeout_s=TIMEOUT_S)


@pytest.fixture(scope="module")
async def _omnisend_server() -> AsyncIterator[tuple[Running, SandboxApp]]:
    clock = ManualClock()
    app = create_omnisend_app(OmnisendConfig(token=OMNISEND_KEY, clock=clock))
    url, stop = await run_in_background(app)
    try:
        async with (
            omnisend_http(settings(url, OMNISEND_KEY)) as http,
            httpx.AsyncClient(base_url=url) as control,
        ):
            yield Running(url, clock, http, control), app
    finally:
        await stop()


@pytest.fixture(scope="module")
async def _omneo_server() -> AsyncIterator[tuple[Running, SandboxApp]]:
    clock = ManualClock()
    app = create_omneo_app(OmneoConfig(token=OMNEO_TOKEN, clock=clock, rate_limit_per_minute=50))
    url, stop = await run_in_background(app)
    try:
        async with omneo_http(settings(url, OMNEO_TOKEN)) as http, httpx.AsyncClient(base_url=url) as control:
            yield Running(url, clock, http, control), app
    finally:
        await stop()


@pytest.fixture
def omnisend_box(_omnisend_server: tuple[Running, SandboxApp]) -> Running:
    """The module's Omnisend sandbox, reset (records, log, faults, rate window) for this test."""
    running, app = _omnisend_server
    app.reset()
    return running


@pytest.fixture
def omnisend_seed_rules(_omnisend_server: tuple[Running, SandboxApp]) -> Iterator[None]:
    """Switch the Omnisend sandbox's separate seed-rules check on for one test."""
    _, app = _omnisend_server
    assert isinstance(app, OmnisendSandbox)
    app.rules.seed_rules = True
    try:
        yield
    finally:
        app.rules.seed_rules = False


@pytest.fixture
def omneo_box(_omneo_server: tuple[Running, SandboxApp]) -> Running:
    """The module's Omneo sandbox, reset for this test."""
    running, app = _omneo_server
    app.reset()
    return running


@pytest.fixture
def omnisend(omnisend_box: Running) -> OmnisendClient:
    return OmnisendClient.from_settings(settings(omnisend_box.url, OMNISEND_KEY), omnisend_box.http)


@pytest.fixture
async def omnisend_events(omnisend_box: Running) -> AsyncIterator[OmnisendClient]:
    """A client as events mode builds it: the 2026-03-15 API's key header and version header."""
    events = DestinationSettings(
        base_url=omnisend_box.url, token=SecretStr(OMNISEND_KEY), timeout_s=TIMEOUT_S, mode="events"
    )
    async with omnisend_http(events) as http:
        yield OmnisendClient.from_settings(events, http)


@pytest.fixture
def omneo(omneo_box: Running) -> OmneoClient:
    return OmneoClient.from_settings(settings(omneo_box.url, OMNEO_TOKEN), omneo_box.http)


def v3_order(order_id: str = "ord-1", products: int = 1, **extra: Any) -> dict[str, Any]:
    """A valid v3 order as the mapper would send it (integer cents, alpha-3 country, string orderNumber)."""
    product = {"productID": "p1", "variantID": "v1", "title": "Trench", "quantity": 1, "price": 19995}
    return {
        "orderID": order_id,
        "orderNumber": "1001",
        "email": "ann@example.com",
        "currency": "USD",
        "orderSum": 19995 * products,
        "createdAt": "2025-06-15T14:32:00Z",
        "paymentStatus": "awaitingPayment",
        "fulfillmentStatus": "unfulfilled",
        "billingAddress": {"countryCode": "USA", "city": "Austin"},
        "products": [{**product, "cartProductID": str(i)} for i in range(products)],
        **extra,
    }


def omneo_order(external_id: str = "L-1", **extra: Any) -> dict[str, Any]:
    item = {
        "name": "Trench",
        "quantity": 1,
        "price_current": 199.95,
        "price_sell": 199.95,
        "price_original": 199.95,
    }
    return {
        "external_id": external_id,
        "total": 199.95,
        "status": "pending",
        "currency": "AUD",
        "items": [item],
        **extra,
    }


def omneo_transaction(order_id: int, external_id: str = "L-1:S1", **extra: Any) -> dict[str, Any]:
    item = {"name": "Trench", "quantity": 1, "price_current": 199.95, "price_sell": 199.95}
    return {
        "external_id": external_id,
        "order_id": order_id,
        "external_order_id": "L-1",
        "total": 199.95,
        "transacted_at": "2025-06-15 14:32:00",
        "timezone": "Australia/Melbourne",
        "location_id": "STORE-1",
        "items": [item],
        **extra,
    }

"""Auth matrix (docs/reliability.md#s1, #s2): no token, unknown token, wrong scope, on every route."""

from __future__ import annotations

import uuid

import pytest

from ledger.api.auth import TokenStore
from tests.integration.api.conftest import Api

OID = "52c25709-6854-4945-9783-4bc136b63981"  # fixed: xdist workers must collect identical ids
ROUTES = [
    ("POST", "/api/v3/orders", "orders:write"),
    ("PUT", f"/api/v3/orders/{OID}", "orders:write"),
    ("DELETE", f"/api/v3/orders/{OID}", "orders:write"),
    ("POST", f"/api/v3/orders/{OID}/payments", "orders:write"),
    ("POST", f"/api/v3/orders/{OID}/shipments", "orders:write"),
    ("POST", f"/api/v3/orders/{OID}/shipments/S1/delivered", "orders:write"),
    ("POST", f"/api/v3/orders/{OID}/cancel", "orders:write"),
    ("GET", f"/api/v3/orders/{OID}", "orders:read"),
    ("GET", f"/api/v3/orders/{OID}/transactions", "orders:read"),
    ("GET", f"/api/v3/orders/{OID}/events", "audit:read"),
    ("GET", "/api/v3/events", "audit:read"),
    ("GET", "/api/v3/reconciliations/latest", "audit:read"),
    ("POST", "/api/v3/reconciliations", "admin"),
]
BODY = b'{"currency": "USD", "total": 1, "items": [{"name": "x", "quantity": 1, "price_sell": 1}]}'


@pytest.mark.parametrize(("method", "path", "scope"), ROUTES)
async def test_every_route_refuses_missing_unknown_and_under_scoped_tokens(
    api: Api, method: str, path: str, scope: str
) -> None:
    def send(headers: dict[str, str]):  # type: ignore[no-untyped-def]
        headers = {"Content-Type": "application/json", **headers}
        return api.client.request(method, path, content=BODY if method != "GET" else None, headers=headers)

    for headers in (
        {},
        {"Authorization": "Bearer lgr_unknown"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ):
        response = await send(headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
    for other in ("orders:write", "orders:read", "audit:read"):
        if other == scope:
            continue
        response = await send(api.auth(other))
        assert response.status_code == 403, (other, response.text)
        assert response.json()["required_scope"] == scope
    assert await api.event_count() == 0


async def test_admin_implies_every_scope_and_revoked_tokens_stop_working(api: Api) -> None:
    response = await api.client.get("/api/v3/events", headers=api.auth("admin"))
    assert response.status_code == 200
    tokens = TokenStore(api.pool, cache_ttl_s=0)
    token, principal = await tokens.create("short-lived", ["orders:read"])
    assert await tokens.authenticate(token) == principal
    assert await tokens.revoke(uuid.UUID(principal.token_id))
    assert await tokens.authenticate(token) is None
    stored = await api.pool.fetchval("SELECT count(*) FROM api_tokens WHERE token_hash = $1", token.encode())
    assert stored == 0, "tokens are stored hashed"


async def test_every_event_records_the_tokens_principal_as_actor(api: Api) -> None:
    response = await api.client.post(
        "/api/v3/orders",
        content=BODY,
        headers=api.auth("orders:write", **{"Content-Type": "application/json"}),
    )
    assert response.status_code == 201
    actor = await api.pool.fetchval("SELECT metadata->>'actor' FROM events")
    assert actor == "t-orders:write"

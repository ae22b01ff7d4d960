"""Hostile and malformed input (docs/reliability.md#f23, #f24, #s4, #s5): always 4xx problem+json, nothing appended."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.integration.api.conftest import Api

ITEM = '{"name": "Coat", "quantity": 1, "price_sell": 10.00}'


def order(items: str = ITEM, extra: str = "") -> bytes:
    return f'{{"currency": "USD", "total": 10.00{extra}, "items": [{items}]}}'.encode()


def item(**fields: object) -> str:
    base: dict[str, object] = {"name": "Coat", "quantity": 1, "price_sell": 10}
    base.update(fields)
    return json.dumps(base)


CORPUS: list[tuple[str, bytes, int]] = [
    ("negative quantity", order(item(quantity=-1)), 422),
    ("zero quantity", order(item(quantity=0)), 422),
    ("fractional quantity", order('{"name": "Coat", "quantity": 1.5, "price_sell": 10}'), 422),
    ("quantity as a float", order('{"name": "Coat", "quantity": 2.0, "price_sell": 10}'), 422),
    ("quantity as a string", order(item(quantity="2")), 422),
    ("quantity 2^63", order(item(quantity=2**63)), 422),
    ("a 5000-digit integer", order(item(quantity=int("9" * 70))), 422),
    ("too many decimals for USD", order('{"name": "Coat", "quantity": 1, "price_sell": 10.005}'), 422),
    ("NaN", order('{"name": "Coat", "quantity": 1, "price_sell": NaN}'), 422),
    ("Infinity", order('{"name": "Coat", "quantity": 1, "price_sell": Infinity}'), 422),
    ("-Infinity total", b'{"currency": "USD", "total": -Infinity, "items": [' + ITEM.encode() + b"]}", 422),
    ("1e309", order('{"name": "Coat", "quantity": 1, "price_sell": 1e309}'), 422),
    ("negative price", order(item(price_sell=-1)), 422),
    ("boolean total", b'{"currency": "USD", "total": true, "items": [' + ITEM.encode() + b"]}", 422),
    ("items not a list", b'{"currency": "USD", "total": 1, "items": {}}', 422),
    ("no items", b'{"currency": "USD", "total": 1, "items": []}', 422),
    ("unknown field", order(extra=', "colour": "red"'), 422),
    ("mass assignment of version", order(extra=', "version": 7'), 422),
    ("mass assignment of event_id", order(extra=', "event_id": "x"'), 422),
    ("NUL in a string", order(item(name="Co\u0000at")), 422),
    ("lone surrogate", order('{"name": "Co\\ud800at", "quantity": 1, "price_sell": 10}'), 422),
    ("RTL override", order(item(name="Co\u202eat")), 422),
    ("unknown currency", b'{"currency": "XYZ", "total": 1, "items": [' + ITEM.encode() + b"]}", 422),
    ("mixed currencies", order(item(currency="EUR")), 422),
    (
        "duplicate keys",
        b'{"currency": "USD", "currency": "EUR", "total": 10, "items": [' + ITEM.encode() + b"]}",
        400,
    ),
    ("deep nesting", b'{"note": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400),
    ("truncated JSON", b'{"currency": "USD", "total": ', 400),
    ("invalid UTF-8", b'{"currency": "\xff\xfe"}', 400),
    ("a JSON array", b"[1, 2, 3]", 422),
    ("JSON null", b"null", 422),
    ("empty body", b"", 400),
    ("too many lines", order(",".join([ITEM] * 51)), 422),
]


@pytest.mark.parametrize(("name", "payload", "status"), CORPUS, ids=[c[0] for c in CORPUS])
async def test_bad_order_bodies_are_refused_with_a_problem(
    api: Api, name: str, payload: bytes, status: int
) -> None:
    response = await api.client.post(
        "/api/v3/orders", content=payload, headers=api.auth(**{"Content-Type": "application/json"})
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].startswith("urn:order-ledger:problem:")
    assert problem["status"] == status
    if status == 422 and problem["type"].endswith("validation-error"):
        assert problem["errors"], "field errors say what is wrong"
    assert await api.event_count() == 0


async def test_a_ten_megabyte_body_is_413_and_a_wrong_content_type_is_415(api: Api) -> None:
    big = b'{"note": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = await api.client.post(
        "/api/v3/orders", content=big, headers=api.auth(**{"Content-Type": "application/json"})
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b"x" * (512 * 1024)

    streamed = await api.client.post(
        "/api/v3/orders", content=chunks(), headers=api.auth(**{"Content-Type": "application/json"})
    )
    assert streamed.status_code == 413

    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"):
        wrong = await api.client.post(
            "/api/v3/orders", content=order(), headers=api.auth(**{"Content-Type": ctype})
        )
        assert wrong.status_code == 415, ctype
    assert await api.event_count() == 0


async def test_domain_rules_on_an_existing_order_are_422_with_the_reason(api: Api) -> None:
    headers = api.auth(**{"Content-Type": "application/json"})
    placed = await api.client.post(
        "/api/v3/orders", content=order(item(quantity=2, line_id="A", price_sell=5)), headers=headers
    )
    assert placed.status_code == 201, placed.text
    oid = placed.json()["data"]["id"]
    cases = [
        ("shipments", {"lines": [{"line_id": "A", "quantity": 3}]}),
        ("shipments", {"lines": [{"line_id": "NOPE", "quantity": 1}]}),
        ("payments", {"kind": "refunded", "amount": 1}),
        ("payments", {"kind": "captured", "amount": 1000}),
        ("payments", {"kind": "captured", "amount": 1, "currency": "EUR"}),
        ("payments", {"kind": "captured", "amount": "0.001"}),
        ("payments", {"kind": "stolen", "amount": 1}),
    ]
    for route, payload in cases:
        response = await api.client.post(
            f"/api/v3/orders/{oid}/{route}", content=json.dumps(payload), headers=headers
        )
        assert response.status_code == 422, (payload, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json().get("detail")
    assert await api.event_count() == 1


async def test_an_order_too_large_to_publish_is_refused_and_a_large_one_is_not(api: Api) -> None:
    """The relay sends each event with the whole order view: a body under the API's limit can
    still make a message over the topic's (1 MiB), which could never be published."""
    tags = [f"tag-{j}-" + "x" * 170 for j in range(100)]  # about 18 kB of tags per line

    def lines(count: int) -> str:
        return ", ".join(item(line_id=f"L{i}", price_sell=1, tags=tags) for i in range(count))

    headers = api.auth(**{"Content-Type": "application/json"})
    huge = f'{{"currency": "USD", "total": 50, "items": [{lines(50)}]}}'.encode()
    assert len(huge) < 1024 * 1024  # within the body limit
    refused = await api.client.post("/api/v3/orders", content=huge, headers=headers)
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"] == "urn:order-ledger:problem:order-too-large", str(problem)[:800]
    assert problem["size"] > problem["max_bytes"] == 1024 * 1024
    assert await api.event_count() == 0
    large = f'{{"currency": "USD", "total": 15, "items": [{lines(15)}]}}'.encode()
    accepted = await api.client.post("/api/v3/orders", content=large, headers=headers)
    assert accepted.status_code == 201, accepted.text
    assert await api.event_count() == 1


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/api/v3/orders/not-a-uuid", {}, 404),
        ("GET", "/api/v3/orders/00000000-0000-0000-0000-000000000000", {}, 404),
        ("GET", "/api/v3/orders/00000000-0000-0000-0000-000000000000?version=0", {}, 422),
        ("GET", "/api/v3/orders/00000000-0000-0000-0000-000000000000?at=yesterday", {}, 422),
        ("GET", "/api/v3/events?cursor=%%%", {}, 422),
        ("GET", "/api/v3/events?limit=0", {}, 422),
        ("GET", "/api/v3/orders?external_id=a%00b", {}, 422),
        ("GET", "/api/v3/events?actor=a%00b", {}, 422),
        ("GET", "/api/v3/transactions?order_id=nope", {}, 422),
        ("GET", "/api/v3/orders?cursor=nope", {}, 422),
        ("GET", "/api/v3/transactions?cursor=nope", {}, 422),
        ("PATCH", "/api/v3/orders", {}, 405),
        ("GET", "/api/v3/nothing-here", {}, 404),
        ("PUT", "/api/v3/orders/00000000-0000-0000-0000-000000000000", {"If-Match": "yesterday"}, 400),
        ("PUT", "/api/v3/orders/00000000-0000-0000-0000-000000000000", {"If-Match": 'W/"1"'}, 400),
        ("POST", "/api/v3/orders", {"Idempotency-Key": "short"}, 400),
        ("POST", "/api/v3/orders", {"Idempotency-Key": "aaaaaaaaaaaa"}, 400),
        ("POST", "/api/v3/orders", {"Idempotency-Key": "x" * 300}, 400),
    ],
)
async def test_bad_paths_params_and_headers_are_problems(
    api: Api, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    content = b'{"status": "x"}' if method in {"PUT", "POST"} else None
    if path == "/api/v3/orders" and method == "POST":
        content = order()
    response = await api.client.request(
        method, path, content=content, headers=api.auth(**{"Content-Type": "application/json", **headers})
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    if status != 400:  # clients branch on `type`: "bad-request" belongs to 400 alone
        assert problem["type"] != "urn:order-ledger:problem:bad-request", problem
    assert await api.event_count() == 0

"""The OpenAPI document describes what the API sends and accepts (a generated client must work)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger_app.api import create_app
from ledger_kernel.settings import Settings


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def test_constraints_are_json_schema_keywords_not_pydantic_ones(document: dict[str, Any]) -> None:
    offending = [node for node in _walk(document) if {"ge", "gt", "le", "lt"} & node.keys()]
    assert offending == []
    payment = document["components"]["schemas"]["RecordPayment"]["properties"]["amount"]
    assert {"type": "number", "exclusiveMinimum": 0}.items() <= payment["anyOf"][0].items()


def test_money_in_answers_is_declared_as_the_numbers_that_are_sent(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["OrderView"]["properties"]["total"]["type"] == "number"
    for name in ("price_sell", "price_current", "price_original"):
        assert schemas["OrderItemView"]["properties"][name]["type"] == "number"


def test_every_error_answer_is_documented_as_problem_json(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        for code, response in operation["responses"].items():
            if code[0] in "45":
                assert list(response["content"]) == ["application/problem+json"], (method, path, code)
    assert "HTTPValidationError" not in document["components"]["schemas"]


@pytest.mark.parametrize("path", ["/api/v3/orders", "/api/v3/transactions", "/api/v3/events"])
def test_list_routes_document_auth_failures_and_bad_parameters(document: dict[str, Any], path: str) -> None:
    responses = document["paths"][path]["get"]["responses"]
    assert {"401", "403", "422"} <= responses.keys()
    limit = next(p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)


def test_the_audit_feeds_order_id_is_a_documented_uuid(document: dict[str, Any]) -> None:
    order_id = next(
        p for p in document["paths"]["/api/v3/events"]["get"]["parameters"] if p["name"] == "order_id"
    )
    assert any(s.get("format") == "uuid" for s in _walk(order_id["schema"]))


def test_probes_and_metrics_are_documented_as_open_and_the_rest_as_bearer(document: dict[str, Any]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert document["paths"][path]["get"]["security"] == []
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert document["security"] == [{"bearer": []}]


def test_a_placed_order_links_to_what_can_be_done_with_it(document: dict[str, Any]) -> None:
    links = document["paths"]["/api/v3/orders"]["post"]["responses"]["201"]["links"]
    assert {"GetOrder", "RecordPayment", "DispatchShipment", "CancelOrder", "DeleteOrder"} <= links.keys()
    assert links["GetOrder"]["parameters"] == {"order_id": "$response.body#/data/id"}

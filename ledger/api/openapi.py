"""Finishing touches on the generated OpenAPI document, so it describes what the API does.

- Every 4xx/5xx answer is documented as `application/problem+json` with the `ProblemModel`
  schema (FastAPI's own 422 says `application/json` and `HTTPValidationError`, which this API
  never sends).
- Lists of lines say the `api.max_lines` this server enforces (a 422 above it), not the models'
  hard bound (past which a body would be refused as too large, 413, before validation).
- OpenAPI links say where the ids in an answer lead (an order placed, then read, paid, shipped,
  delivered, canceled, deleted): generated clients and stateful testers (schemathesis) follow
  them through `data.id` and `data.shipments[*].shipment_id`.
"""

from __future__ import annotations

from typing import Any

from ledger.api.problems import PROBLEM_MEDIA_TYPE
from ledger.api.schemas import ProblemModel
from ledger.domain.commands import HARD_MAX_LINES

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemModel"}
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")
_ORDER = "/api/v3/orders/{order_id}"
_ORDER_ID = "$response.body#/data/id"

#: (path, method, status) of an answer carrying an order -> the operations its id leads to.
_LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/api/v3/orders", "post", "201"): {
        "GetOrder": (_ORDER, "get", {"order_id": _ORDER_ID}),
        "UpdateOrder": (_ORDER, "put", {"order_id": _ORDER_ID}),
        "RecordPayment": (f"{_ORDER}/payments", "post", {"order_id": _ORDER_ID}),
        "DispatchShipment": (f"{_ORDER}/shipments", "post", {"order_id": _ORDER_ID}),
        "CancelOrder": (f"{_ORDER}/cancel", "post", {"order_id": _ORDER_ID}),
        "OrderTransactions": (f"{_ORDER}/transactions", "get", {"order_id": _ORDER_ID}),
        "OrderEvents": (f"{_ORDER}/events", "get", {"order_id": _ORDER_ID}),
        "DeleteOrder": (_ORDER, "delete", {"order_id": _ORDER_ID}),
    },
    (f"{_ORDER}/shipments", "post", "201"): {
        "MarkDelivered": (
            f"{_ORDER}/shipments/{{shipment_id}}/delivered",
            "post",
            {"order_id": _ORDER_ID, "shipment_id": "$response.body#/data/shipments/0/shipment_id"},
        ),
        "GetOrder": (_ORDER, "get", {"order_id": _ORDER_ID}),
    },
}


def document_problems(schema: dict[str, Any]) -> None:
    """Every error response as problem+json; FastAPI's unused validation-error schemas dropped."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                if code[:1] in ("4", "5"):
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": dict(_PROBLEM_REF)}}
                    if code == "422" and response.get("description") == "Validation Error":
                        response["description"] = "Invalid parameters or body (field errors in `errors`)"
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ProblemModel"] = ProblemModel.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in _FASTAPI_ERROR_SCHEMAS:
        components.pop(name, None)


def document_order_ids(schema: dict[str, Any]) -> None:
    """Path `order_id`s are UUIDs (a handler reads them as strings so a non-UUID answers 404)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") == "order_id":
                    parameter["schema"] = {"type": "string", "format": "uuid", "title": "Order Id"}


def add_links(schema: dict[str, Any]) -> None:
    """Attach `_LINKS` to the answers they start from, naming targets by operationId."""
    paths = schema.get("paths", {})
    for (path, method, status), links in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        out = response.setdefault("links", {})
        for name, (target_path, target_method, parameters) in links.items():
            target = paths.get(target_path, {}).get(target_method)
            if target is not None and "operationId" in target:
                out[name] = {"operationId": target["operationId"], "parameters": dict(parameters)}


def cap_line_counts(node: Any, max_lines: int) -> None:
    """Replace the models' hard `maxItems` on lists of lines with the server's `max_lines`."""
    if isinstance(node, dict):
        if node.get("maxItems") == HARD_MAX_LINES:
            node["maxItems"] = min(max_lines, HARD_MAX_LINES)
        for value in node.values():
            cap_line_counts(value, max_lines)
    elif isinstance(node, list):
        for value in node:
            cap_line_counts(value, max_lines)

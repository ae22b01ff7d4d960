"""Order routes (docs/architecture.md#http-api): writes through `OrderService`, reads folded from the event stream.

Writes answer with the order view after the command and `ETag: "<version>"`; they accept
`If-Match` (a stale version is 409 `version-conflict` with `current_version`, as docs/architecture.md#append and
docs/reliability.md#f6 ask, rather than 412) and `Idempotency-Key`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from ledger.api.auth import Principal
from ledger.api.deps import (
    actor_of,
    body_doc,
    idempotency_key,
    if_match,
    parse_order_id,
    read_body,
    request_meta,
    require,
    state_of,
)
from ledger.api.problems import Problem
from ledger.api.schemas import (
    EventList,
    MarkDeliveredBody,
    OrderEnvelope,
    TransactionList,
    problem_responses,
)
from ledger.domain.commands import (
    CancelOrder,
    DeleteOrder,
    DispatchShipment,
    MarkDelivered,
    PlaceOrder,
    RecordPayment,
    UpdateOrder,
)
from ledger.domain.timestamps import Timestamp
from ledger.domain.transactions import derive_transactions
from ledger.domain.views import transaction_to_json
from ledger.service import Change, CommandResult, order_document
from ledger_kernel.wire.codec import dumps
from ledger_kernel.wire.streams import stream_id_of

router = APIRouter(prefix="/api/v3")

JSON = "application/json"
Writer = Annotated[Principal, Depends(require("orders:write"))]
Reader = Annotated[Principal, Depends(require("orders:read"))]
Auditor = Annotated[Principal, Depends(require("audit:read"))]


#: The HTTP status of each kind of command result.
HTTP_STATUS = {Change.CREATED: 201, Change.UPDATED: 200, Change.UNCHANGED: 200}


def result_response(result: CommandResult) -> Response:
    """The HTTP response of a command's result (fresh or replayed: same status, same bytes)."""
    headers = {"ETag": f'"{result.version}"', "Location": f"/api/v3/orders/{result.order_id}"}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(result.document, status_code=HTTP_STATUS[result.change], media_type=JSON, headers=headers)


async def _command(
    request: Request,
    principal: Principal,
    command: BaseModel,
    route: str,
    order_id: UUID | None,
) -> Response:
    expected = if_match(request)
    key = idempotency_key(request)
    result = await state_of(request).service.handle(
        command,
        order_id=order_id,
        expected_version=expected,
        actor=actor_of(principal),
        idempotency_key=key,
        meta=request_meta(request, route),
    )
    return result_response(result)


_WRITE_RESPONSES = problem_responses(400, 401, 403, 404, 409, 410, 413, 415, 422, 503)


@router.post(
    "/orders",
    status_code=201,
    summary="Place an order",
    response_model=OrderEnvelope,
    responses=_WRITE_RESPONSES,
    openapi_extra=body_doc(PlaceOrder),
)
async def place_order(request: Request, principal: Writer) -> Response:
    command = await read_body(request, PlaceOrder)
    return await _command(request, principal, command, "POST /orders", None)


_require_writer = require("orders:write")


async def place_order_direct(request: Request) -> Response:
    """`place_order` with its dependency called by hand: the endpoint of `PlaceOrderFastPath`."""
    return await place_order(request, await _require_writer(request))


def place_order_route() -> APIRoute:
    """The registered `POST /orders` route (its template labels the fast path's metrics)."""
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.endpoint is place_order)


@router.put(
    "/orders/{order_id}",
    summary="Update an order (partial)",
    response_model=OrderEnvelope,
    responses=_WRITE_RESPONSES,
    openapi_extra=body_doc(UpdateOrder),
)
async def update_order(order_id: str, request: Request, principal: Writer) -> Response:
    oid = parse_order_id(order_id)
    command = await read_body(request, UpdateOrder)
    return await _command(request, principal, command, "PUT /orders/{id}", oid)


@router.delete(
    "/orders/{order_id}",
    summary="Delete an order (tombstone; history stays readable)",
    response_model=OrderEnvelope,
    responses=_WRITE_RESPONSES,
    openapi_extra=body_doc(DeleteOrder, required=False),
)
async def delete_order(order_id: str, request: Request, principal: Writer) -> Response:
    oid = parse_order_id(order_id)
    command = await read_body(request, DeleteOrder, empty_ok=True)
    return await _command(request, principal, command, "DELETE /orders/{id}", oid)


@router.post(
    "/orders/{order_id}/payments",
    status_code=201,
    summary="Record a payment (authorized, captured, refunded, voided)",
    response_model=OrderEnvelope,
    responses=_WRITE_RESPONSES,
    openapi_extra=body_doc(RecordPayment),
)
async def record_payment(order_id: str, request: Request, principal: Writer) -> Response:
    oid = parse_order_id(order_id)
    command = await read_body(request, RecordPayment)
    return await _command(request, principal, command, "POST /orders/{id}/payments", oid)


@router.post(
    "/orders/{order_id}/shipments",
    status_code=201,
    summary="Dispatch some lines",
    response_model=OrderEnvelope,
    responses=_WRITE_RESPONSES,
    openapi_extra=body_doc(DispatchShipment),
)
async def dispatch_shipment(order_id: str, request: Request, principal: Writer) -> Response:
    oid = parse_order_id(order_id)
    command = await read_body(request, DispatchShipment)
    return await _command(request, principal, command, "POST /orders/{id}/shipments", oid)


@router.post(
    "/orders/{order_id}/shipments/{shipment_id}/delivered",
    summary="Mark a shipment delivered",
    response_model=OrderEnvelope,
    responses=_WRITE_RESPONSES,
    openapi_extra=body_doc(MarkDeliveredBody, required=False),
)
async def mark_delivered(order_id: str, shipment_id: str, request: Request, principal: Writer) -> Response:
    oid = parse_order_id(order_id)
    command = await read_body(request, MarkDelivered, empty_ok=True, extra={"shipment_id": shipment_id})
    return await _command(request, principal, command, "POST /orders/{id}/shipments/{sid}/delivered", oid)


@router.post(
    "/orders/{order_id}/cancel",
    summary="Cancel an order",
    response_model=OrderEnvelope,
    responses=_WRITE_RESPONSES,
    openapi_extra=body_doc(CancelOrder, required=False),
)
async def cancel_order(order_id: str, request: Request, principal: Writer) -> Response:
    oid = parse_order_id(order_id)
    command = await read_body(request, CancelOrder, empty_ok=True)
    return await _command(request, principal, command, "POST /orders/{id}/cancel", oid)


# -- reads -----------------------------------------------------------------------------------

_READ_RESPONSES = problem_responses(400, 401, 403, 404, 410, 422, 503)


async def _load(
    request: Request, order_id: str, at: datetime | None = None, version: int | None = None
) -> Any:
    oid = parse_order_id(order_id)
    if at is not None and version is not None:
        raise Problem(400, "bad-request", "give at most one of `at` and `version`")
    state = await state_of(request).service.load(oid, to_version=version, as_of=at)
    if state is None:
        raise Problem(404, "not-found", "no order has this id" + (" at that point" if at or version else ""))
    if version is not None and state.version != version:
        raise Problem(404, "not-found", f"the order has no version {version}", current_version=state.version)
    if state.deleted:
        raise Problem(
            410, "gone", "the order was deleted; its history stays at /events", version=state.version
        )
    return state


#: Response header naming the read models (`order_state`, `transactions`) whose rows for this
#: order are stale: the projection quarantined the order (an event it could not apply). The
#: answer itself is folded from the log and current; the lists and their filters are not.
STALE_HEADER = "Ledger-Stale-Read-Models"
_STALE_DOC = {
    STALE_HEADER: {
        "description": "Comma-separated read models (order_state, transactions) whose rows for this"
        " order are stale because a projection could not apply one of its events; the list routes"
        " serve the order's last good rows. Absent when every read model is current.",
        "schema": {"type": "string"},
    }
}


async def _stale_header(request: Request, order_id: UUID) -> dict[str, str]:
    app_state = state_of(request)
    if app_state.pool is None:
        return {}  # an in-memory store has no read models
    stale = await app_state.stale_read_models(app_state.pool, stream_id_of(order_id))
    return {STALE_HEADER: ", ".join(stale)} if stale else {}


@router.get(
    "/orders/{order_id}",
    summary="Get an order (current, or as of a time or version)",
    response_model=OrderEnvelope,
    responses={**_READ_RESPONSES, 200: {"headers": _STALE_DOC}},
)
async def get_order(
    order_id: str,
    request: Request,
    _: Reader,
    at: Annotated[Timestamp | None, Query(description="RFC 3339 time: the order as it was then")] = None,
    version: Annotated[
        int | None, Query(ge=1, le=2**31 - 1, description="The order as of this version")
    ] = None,
) -> Response:
    state = await _load(request, order_id, at, version)
    headers = {"ETag": f'"{state.version}"', **await _stale_header(request, state.id)}
    return Response(order_document(state), media_type=JSON, headers=headers)


@router.get(
    "/orders/{order_id}/transactions",
    summary="Transactions derived from the order's shipments and captures",
    response_model=TransactionList,
    responses={**_READ_RESPONSES, 200: {"headers": _STALE_DOC}},
)
async def order_transactions(order_id: str, request: Request, _: Reader) -> Response:
    state = await _load(request, order_id)
    data = [transaction_to_json(t) for t in derive_transactions(state)]
    return Response(
        dumps({"data": data, "next_cursor": None}),
        media_type=JSON,
        headers=await _stale_header(request, state.id),
    )


@router.get(
    "/orders/{order_id}/events",
    summary="The order's full history (also after deletion)",
    response_model=EventList,
    responses=_READ_RESPONSES,
)
async def order_events(order_id: str, request: Request, _: Auditor) -> Response:
    oid = parse_order_id(order_id)
    rows = await state_of(request).store.read_stream(stream_id_of(oid))
    if not rows:
        raise Problem(404, "not-found", "no order has this id")
    from ledger.api.audit import event_json

    return Response(dumps({"data": [event_json(r) for r in rows], "next_cursor": None}), media_type=JSON)

"""FastAPI routes for the read-model lists, mounted by the API: `app.include_router(make_router(require))`.

Auth is injected (`require_scope("orders:read")` must return a FastAPI dependency), and so is
the way to reach the pool (default: `request.app.state.ledger.pool`, the API's `AppState`), so
this package does not import the API. Responses are `{"data": [...], "next_cursor": ...}` with
money as exact JSON decimal numbers in major units, as the domain's JSON views give them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from ledger.domain.timestamps import Timestamp
from ledger_kernel.wire.codec import dumps
from ledger_kernel.wire.streams import order_id_of, stream_id_of
from projections import quarantine, queries

PoolGetter = Callable[[Request], asyncpg.Pool]
#: Opens the sealed personal fields of a page's items (docs/privacy.md): the rows hold the sealed
#: form, so an erasure shows at once. Injected by the root; default: items as stored.
Reveal = Callable[[Request, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


async def _as_stored(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


Limit = Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)]


def _default_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.ledger.pool
    return pool


#: Response header naming the orders of a page whose rows in this read model are stale: the
#: projection quarantined them (`projections.quarantine`); absent when every row is current.
STALE_ORDERS_HEADER = "Ledger-Stale-Orders"
_STALE_DOC = {
    "description": "Comma-separated ids of the orders on this page whose read-model rows are stale"
    " (the projection could not apply one of their events; operators see them in"
    " `ledger projections status`). Absent when every row is current.",
    "schema": {"type": "string"},
}


async def _page(
    pool: asyncpg.Pool, projection: str, items: list[dict[str, Any]], key: str, next_cursor: str | None
) -> Response:
    response = Response(dumps({"data": items, "next_cursor": next_cursor}), media_type="application/json")
    stale = await quarantine.stale_streams(pool, projection, sorted({stream_id_of(item[key]) for item in items}))
    if stale:
        response.headers[STALE_ORDERS_HEADER] = ", ".join(sorted(order_id_of(s) or s for s in stale))
    return response


def make_router(
    require_scope: Callable[[str], Callable[..., Any]],
    *,
    get_pool: PoolGetter = _default_pool,
    scope: str = "orders:read",
    reveal: Reveal = _as_stored,
) -> APIRouter:
    """The list routes, guarded by `require_scope(scope)`; a malformed cursor or filter is a 422."""
    router = APIRouter(dependencies=[Depends(require_scope(scope))])

    @router.get(
        "/api/v3/orders",
        summary="List orders from the order_state read model",
        responses={200: {"headers": {STALE_ORDERS_HEADER: _STALE_DOC}}},
    )
    async def list_orders(
        request: Request,
        *,
        status: str | None = None,
        payment_status: str | None = None,
        fulfillment_status: str | None = None,
        updated_since: Annotated[
            Timestamp | None, Query(description="updated_at >= updated_since (RFC 3339)")
        ] = None,
        external_id: str | None = None,
        profile_id: str | None = None,
        cursor: str | None = None,
        limit: Limit = 100,
    ) -> Response:
        try:
            items, next_cursor = await queries.list_orders(
                get_pool(request),
                status=status,
                payment_status=payment_status,
                fulfillment_status=fulfillment_status,
                updated_since=updated_since,
                external_id=external_id,
                profile_id=profile_id,
                cursor=cursor,
                limit=limit,
            )
        except queries.InvalidQuery as exc:
            raise HTTPException(422, str(exc)) from None
        items = await reveal(request, items)
        return await _page(get_pool(request), "order_state", items, "id", next_cursor)

    @router.get(
        "/api/v3/transactions",
        summary="List Transactions derived from shipments",
        responses={200: {"headers": {STALE_ORDERS_HEADER: _STALE_DOC}}},
    )
    async def list_transactions(
        request: Request,
        *,
        order_id: UUID | None = None,
        since: Annotated[Timestamp | None, Query(description="transacted_at >= since (RFC 3339)")] = None,
        until: Annotated[Timestamp | None, Query(description="transacted_at < until (RFC 3339)")] = None,
        cursor: str | None = None,
        limit: Limit = 100,
    ) -> Response:
        try:
            items, next_cursor = await queries.list_transactions(
                get_pool(request), order_id=order_id, since=since, until=until, cursor=cursor, limit=limit
            )
        except queries.InvalidQuery as exc:
            raise HTTPException(422, str(exc)) from None
        return await _page(get_pool(request), "transactions", items, "order_id", next_cursor)

    return router

"""The global audit feed `GET /api/v3/events`: the fenced log, filtered, with cursor pages.

The cursor is the last event's `(tx, position)` checkpoint, so pages never skip an event that
committed late (docs/architecture.md#xid8-fence); it is opaque to clients (base64url of "tx.position").
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from ledger.api.auth import Principal
from ledger.api.deps import require, state_of
from ledger.api.problems import Problem
from ledger.api.schemas import EventList, problem_responses
from ledger.domain.timestamps import Timestamp
from ledger.store import Checkpoint, RecordedEvent
from ledger_kernel.wire.codec import dumps
from ledger_kernel.wire.paging import MAX_PAGE_SIZE
from ledger_kernel.wire.streams import order_id_of, stream_id_of

router = APIRouter(prefix="/api/v3")


def event_json(row: RecordedEvent) -> dict[str, Any]:
    """An event as the history and audit routes show it (money in `data` is in minor units)."""
    return {
        "event_id": str(row.event_id),
        "stream_id": row.stream_id,
        "order_id": order_id_of(row.stream_id) or row.stream_id,
        "version": row.version,
        "position": row.position,
        "type": row.type,
        "schema_version": row.schema_version,
        "data": row.data,
        "metadata": row.metadata,
        "recorded_at": row.recorded_at.isoformat(),
    }


def encode_cursor(checkpoint: Checkpoint) -> str:
    return base64.urlsafe_b64encode(f"{checkpoint.tx}.{checkpoint.position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Checkpoint:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tx, position = raw.split(".")
        checkpoint = Checkpoint(int(tx), int(position))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _bad_cursor() from None
    if not (0 <= checkpoint.tx < 2**63 and 0 <= checkpoint.position < 2**63):
        raise _bad_cursor()
    return checkpoint


def _bad_cursor() -> Problem:
    """422, as on every list route: a bad query parameter is invalid input, whichever it is."""
    return Problem(
        422,
        "validation-error",
        "cursor is not one this API handed out",
        errors=[{"loc": ["query", "cursor"], "msg": "not a cursor of this API", "type": "cursor"}],
    )


@router.get(
    "/events",
    summary="Global audit feed of every event",
    response_model=EventList,
    responses=problem_responses(400, 401, 403, 422, 503),
)
async def audit_feed(
    request: Request,
    *,
    _: Annotated[Principal, Depends(require("audit:read"))],
    since: Annotated[Timestamp | None, Query(description="recorded_at >= since (RFC 3339)")] = None,
    until: Annotated[Timestamp | None, Query(description="recorded_at < until (RFC 3339)")] = None,
    type: Annotated[list[str] | None, Query(max_length=50, description="Event types (repeatable)")] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    source: Annotated[str | None, Query(max_length=64, description="http or kafka")] = None,
    order_id: Annotated[UUID | None, Query(description="Only this order's events")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size (above the maximum: 422)")
    ] = 100,
) -> Response:
    state = state_of(request)
    for text in (actor, source, *(type or [])):
        if text is not None and ("\x00" in text or not text.isprintable()):
            raise Problem(422, "validation-error", "filters must be printable text")
    if limit > state.settings.api.page_size_max:
        raise Problem(
            422,
            "validation-error",
            f"limit is at most {state.settings.api.page_size_max}",
            errors=[
                {"loc": ["query", "limit"], "msg": "above the page size maximum", "type": "less_than_equal"}
            ],
        )
    rows = await state.store.read_events(
        since=since,
        until=until,
        types=type,
        actor=actor,
        source=source,
        stream_id=stream_id_of(order_id) if order_id else None,
        after=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    next_cursor = encode_cursor(rows[-1].checkpoint) if len(rows) == limit else None
    return Response(
        dumps({"data": [event_json(r) for r in rows], "next_cursor": next_cursor}),
        media_type="application/json",
    )

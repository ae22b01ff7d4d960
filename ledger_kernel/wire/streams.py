"""The stream-id rule: an order's events live in the stream `order-<uuid>`.

One rule, written once: the store, the relay, the projections, the audit tools and the fan-out
all name an order's stream (and read an order id back from one) through these functions, and
SQL that selects order streams uses `ORDER_STREAM_PREFIX`.
"""

from __future__ import annotations

from uuid import UUID

ORDER_STREAM_PREFIX = "order-"


def stream_id_of(order_id: UUID | str) -> str:
    """The stream of an order's events."""
    return f"{ORDER_STREAM_PREFIX}{order_id}"


def order_id_of(stream_id: str) -> str | None:
    """The order id of an `order-<uuid>` stream; None for any other stream."""
    if stream_id.startswith(ORDER_STREAM_PREFIX):
        return stream_id[len(ORDER_STREAM_PREFIX) :]
    return None

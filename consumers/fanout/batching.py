"""Many orders' Omnisend writes in few calls: the v3 batches endpoint (docs/connectors.md#omnisend-batches).

Why: a backlog or a `ledger fanout replay` of N orders costs N calls against Omnisend's
400 requests/minute, so 50,000 orders take over two hours. `POST /v3/batches` carries up to
1,000 order POSTs or PUTs in one call; the vendor runs them asynchronously, so we poll
`GET /v3/batches/{id}` until it is `finished` (or `stopped`, after too many errors) and read
each item's own answer from `GET /v3/batches/{id}/items`. A batch of B orders costs about
3 calls instead of B.

What this module returns is each order's item outcome, classified as the single call's
answer would be. It decides nothing: the deliverer handles each order's outcome on its own
(a refused item parks its own order only; an item that did not run, or ran into a retryable
answer, is sent again alone), so every guarantee of the single-call path holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consumers.fanout.budget import Budget, call_with_retries
from consumers.fanout.mapping_types import DestinationCall
from consumers.http import Outcome, Success
from consumers.omnisend.client import OmnisendClient
from ledger_kernel.observability import get_logger
from ledger_kernel.settings import DestinationSettings

__all__ = ["BATCHED_KINDS", "BatchSettings", "send_order_batches"]

log = get_logger(__name__)

BATCHED_KINDS = {"omnisend.order.create": "POST", "omnisend.order.replace": "PUT"}
"""The order calls the v3 batches endpoint can carry (it takes POST and PUT, not PATCH/DELETE)."""

MAX_BATCH_ITEMS = 1000
"""Omnisend v3: at most 1,000 operations in one batch."""

FINAL_STATUSES = frozenset({"finished", "stopped"})


@dataclass(frozen=True, slots=True)
class BatchSettings:
    size: int
    poll_s: float
    wait_s: float


def batch_settings(settings: DestinationSettings) -> BatchSettings:
    return BatchSettings(
        size=max(1, min(settings.batch_size, MAX_BATCH_ITEMS)),
        poll_s=settings.batch_poll_s,
        wait_s=settings.batch_wait_s,
    )


async def send_order_batches(
    client: OmnisendClient,
    calls: Sequence[DestinationCall],
    *,
    batch: BatchSettings,
    budget: Budget,
    settings: DestinationSettings,
    closing: asyncio.Event,
    on_outcome: Callable[[Outcome], None],
) -> dict[str, Outcome]:
    """Send the order calls in batches (one method per batch); `{orderID: item outcome}`.

    An order missing from the answer (the batch could not be created, was stopped, or did
    not finish within `wait_s`) has no outcome: its caller sends it alone.
    """
    results: dict[str, Outcome] = {}
    for method in ("POST", "PUT"):
        todo = [c for c in calls if BATCHED_KINDS.get(c.kind) == method and c.body is not None]
        for start in range(0, len(todo), batch.size):
            chunk = todo[start : start + batch.size]
            results.update(
                await _one_batch(
                    client,
                    method,
                    chunk,
                    batch=batch,
                    budget=budget,
                    settings=settings,
                    closing=closing,
                    on_outcome=on_outcome,
                )
            )
    return results


async def _one_batch(
    client: OmnisendClient,
    method: str,
    calls: Sequence[DestinationCall],
    *,
    batch: BatchSettings,
    budget: Budget,
    settings: DestinationSettings,
    closing: asyncio.Event,
    on_outcome: Callable[[Outcome], None],
) -> dict[str, Outcome]:
    items = [{**(c.body or {}), "orderID": c.key} for c in calls]
    created = await call_with_retries(
        lambda: client.create_batch(method, "orders", items),
        budget=budget,
        settings=settings,
        closing=closing,
        on_outcome=on_outcome,
    )
    if not isinstance(created, Success) or created.remote_id is None:
        log.warning("batch not created; its orders go one by one", method=method, orders=len(calls))
        return {}
    batch_id = created.remote_id
    deadline = time.monotonic() + batch.wait_s
    status = "pending"
    while status not in FINAL_STATUSES:
        if time.monotonic() >= deadline:
            log.warning("batch did not finish in time; its orders go one by one", batch_id=batch_id)
            return {}
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), batch.poll_s)
        if closing.is_set():
            return {}
        polled = await call_with_retries(
            lambda: client.get_batch(batch_id),
            budget=budget,
            settings=settings,
            closing=closing,
            on_outcome=on_outcome,
        )
        if not isinstance(polled, Success) or not isinstance(polled.body, dict):
            log.warning("batch status unreadable; its orders go one by one", batch_id=batch_id)
            return {}
        status = str(polled.body.get("status", ""))
    listed = await call_with_retries(
        lambda: client.get_batch_items(batch_id),
        budget=budget,
        settings=settings,
        closing=closing,
        on_outcome=on_outcome,
    )
    if not isinstance(listed, Success) or not isinstance(listed.body, dict):
        log.warning("batch items unreadable; its orders go one by one", batch_id=batch_id)
        return {}
    wanted = {c.key for c in calls}
    out: dict[str, Outcome] = {}
    for entry in [*(listed.body.get("responses") or []), *(listed.body.get("errors") or [])]:
        if not isinstance(entry, dict) or not isinstance(entry.get("responseCode"), int):
            continue
        request = entry.get("request")
        order_id = request.get("orderID") if isinstance(request, dict) else None
        if isinstance(order_id, str) and order_id in wanted:
            out[order_id] = client.item_outcome(entry["responseCode"], entry.get("response"))
    if status == "stopped" or len(out) < len(calls):
        log.warning(
            "batch left items without an answer; they go one by one",
            batch_id=batch_id,
            status=status,
            answered=len(out),
            sent=len(calls),
        )
    return out

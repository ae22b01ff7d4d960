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

A batch we stop waiting for (not finished in `wait_s`, status unreadable, shutdown, crash) may
still run later and replace an order with the older state it carries. So each order is marked
with the batch (`on_created`, before any wait) and the deliverer sends a newer state of a
marked order only once that batch has ended (`wait_for_batch`; docs/connectors.md#omnisend-batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumers.fanout.budget import Budget, call_with_retries
from consumers.fanout.mapping_types import DestinationCall
from consumers.http import Outcome, Permanent, Success
from consumers.omnisend.client import OmnisendClient
from ledger_kernel.observability import get_logger
from ledger_kernel.settings import DestinationSettings

__all__ = [
    "BATCHED_KINDS",
    "BATCH_MARK",
    "BatchSettings",
    "Batches",
    "Retrying",
    "send_order_batches",
    "wait_for_batch",
]

log = get_logger(__name__)

BATCHED_KINDS = {"omnisend.order.create": "POST", "omnisend.order.replace": "PUT"}
"""The order calls the v3 batches endpoint can carry (it takes POST and PUT, not PATCH/DELETE)."""

MAX_BATCH_ITEMS = 1000
"""Omnisend v3: at most 1,000 operations in one batch."""

FINAL_STATUSES = frozenset({"finished", "stopped"})

MISSING = "missing"
"""`wait_for_batch`'s answer when Omnisend does not know the batch (404): it will never run."""

BATCH_MARK = "batch:"
"""Prefix of the `sent` key `batch:<batchID>` -> order version a batch carries, until it ended."""


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


@dataclass(frozen=True, slots=True)
class Retrying:
    """How every batch call is made: the destination's retries under the shared budget."""

    budget: Budget
    settings: DestinationSettings
    closing: asyncio.Event
    on_outcome: Callable[[Outcome], None]

    async def read(
        self, call: Callable[[], Awaitable[Outcome]], what: str, batch_id: str
    ) -> dict[str, Any] | None:
        """The JSON object a batch read answered, or None (logged)."""
        outcome = await call_with_retries(
            call,
            budget=self.budget,
            settings=self.settings,
            closing=self.closing,
            on_outcome=self.on_outcome,
        )
        if isinstance(outcome, Success) and isinstance(outcome.body, dict):
            return outcome.body
        if isinstance(outcome, Permanent) and outcome.status == 404:
            return {"status": MISSING}
        log.warning(f"batch {what} unreadable", batch_id=batch_id)
        return None


@dataclass(slots=True)
class Batches:
    """What `send_order_batches` learnt: each answered order's item outcome, the batches that ended."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)


async def send_order_batches(
    client: OmnisendClient,
    calls: Sequence[DestinationCall],
    *,
    batch: BatchSettings,
    retrying: Retrying,
    on_created: Callable[[str, Sequence[DestinationCall]], Awaitable[None]],
) -> Batches:
    """Send the order calls in batches (one method per batch): item outcomes by orderID.

    An order missing from `outcomes` (the batch could not be created, was stopped, or did
    not finish within `wait_s`) has no outcome: its caller sends it alone. `on_created` runs
    once a batch exists, before it is waited for: the caller marks its orders.
    """
    results = Batches()
    for method in ("POST", "PUT"):
        todo = [c for c in calls if BATCHED_KINDS.get(c.kind) == method and c.body is not None]
        for start in range(0, len(todo), batch.size):
            chunk = todo[start : start + batch.size]
            await _one_batch(
                client, method, chunk, batch=batch, retrying=retrying, on_created=on_created, into=results
            )
    return results


async def wait_for_batch(
    client: OmnisendClient,
    batch_id: str,
    *,
    deadline: float,
    poll_s: float,
    retrying: Retrying,
    first_poll_now: bool = False,
) -> str | None:
    """Poll until the batch ended: `finished`, `stopped` or `missing` (Omnisend does not know it);
    None when it did not end by `deadline` (monotonic), its status was unreadable, or we are closing.

    `first_poll_now`: one poll at once even past the deadline (a batch marked on an order long
    ago has most likely ended; a new one never has, so its first poll waits `poll_s`).
    """
    status = "pending"
    polled_once = False
    while status not in FINAL_STATUSES:
        waits = polled_once or not first_poll_now
        if waits and time.monotonic() >= deadline:
            log.warning("batch did not finish in time", batch_id=batch_id)
            return None
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(retrying.closing.wait(), poll_s)
        if retrying.closing.is_set():
            return None
        polled = await retrying.read(lambda: client.get_batch(batch_id), "status", batch_id)
        polled_once = True
        if polled is None:
            return None
        status = str(polled.get("status", ""))
        if status == MISSING:
            log.warning("Omnisend does not know the batch: it will not run", batch_id=batch_id)
            return MISSING
    return status


async def _one_batch(
    client: OmnisendClient,
    method: str,
    calls: Sequence[DestinationCall],
    *,
    batch: BatchSettings,
    retrying: Retrying,
    on_created: Callable[[str, Sequence[DestinationCall]], Awaitable[None]],
    into: Batches,
) -> None:
    items = [{**(c.body or {}), "orderID": c.key} for c in calls]
    created = await call_with_retries(
        lambda: client.create_batch(method, "orders", items),
        budget=retrying.budget,
        settings=retrying.settings,
        closing=retrying.closing,
        on_outcome=retrying.on_outcome,
    )
    if not isinstance(created, Success) or created.remote_id is None:
        log.warning("batch not created; its orders go one by one", method=method, orders=len(calls))
        return
    batch_id = created.remote_id
    await on_created(batch_id, calls)
    status = await wait_for_batch(
        client, batch_id, deadline=time.monotonic() + batch.wait_s, poll_s=batch.poll_s, retrying=retrying
    )
    if status is None:
        log.warning("batch given up on; its orders go one by one", batch_id=batch_id)
        return
    into.ended.add(batch_id)
    listed = (
        await retrying.read(lambda: client.get_batch_items(batch_id), "items", batch_id)
        if status != MISSING
        else None
    )
    if listed is None:
        return
    wanted = {c.key for c in calls}
    out: dict[str, Outcome] = {}
    for entry in [*(listed.get("responses") or []), *(listed.get("errors") or [])]:
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
    into.outcomes.update(out)

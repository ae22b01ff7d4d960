"""Build a `History` from what a run left behind: the event store, the events topic and the
sandboxes' request logs and records.

What each destination must end up with comes from the real relay's envelopes on the topic
(deduplicated by event id, in version order), through the same domain functions the mappings
use: Omneo sees an order's status (`omneo_status`) and holds one Transaction per derived
shipment; Omnisend (orders mode) sees payment and fulfilment status. Callers should also check
the topic against the store (`tests.integration.relay.support.check_topic`), so no event is
missing from what is expected here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from consumers.fanout.mapping_types import Envelope
from consumers.omneo.mapping import omneo_status
from ledger.domain.state import Order
from ledger.domain.statuses import fulfillment_status, payment_status
from ledger.domain.transactions import derive_transactions
from tests.history.checker import Expected, History, Record, Write, collapse

__all__ = [
    "expected_from_envelopes",
    "history_of",
    "omneo_records",
    "omneo_writes",
    "omnisend_state",
    "omnisend_writes",
    "placed_in_ledger",
]

OMNEO_ORDERS = "/api/v3/orders"
OMNISEND_ORDERS = "/v3/orders"


def omnisend_state(payment: Any, fulfillment: Any) -> tuple[str, str]:
    return (str(payment), str(fulfillment))


def orders_by_version(raw_values: Iterable[bytes]) -> dict[str, list[Order]]:
    """Order id -> the order state after each of its versions (first copy of each event)."""
    seen: set[str] = set()
    by_order: dict[str, dict[int, Order]] = defaultdict(dict)
    for raw in raw_values:
        env = Envelope.from_bytes(raw)
        if env.event_id in seen:
            continue
        seen.add(env.event_id)
        by_order[env.order_id][env.version] = env.order
    return {order_id: [v[k] for k in sorted(v)] for order_id, v in by_order.items()}


def expected_from_envelopes(
    raw_values: Iterable[bytes], destinations: Sequence[str] = ("omneo", "omnisend")
) -> dict[tuple[str, str], Expected]:
    """(destination, order id) -> what each of `destinations` must end up with."""
    expected: dict[tuple[str, str], Expected] = {}
    for order_id, states in orders_by_version(raw_values).items():
        final = states[-1]
        if "omneo" in destinations:
            expected[("omneo", order_id)] = Expected(
                collapse(omneo_status(o) for o in states),
                frozenset(tx.external_id for tx in derive_transactions(final)),
            )
        if "omnisend" in destinations:
            expected[("omnisend", order_id)] = Expected(
                collapse(omnisend_state(payment_status(o), fulfillment_status(o)) for o in states)
            )
    return expected


def _ok(entry: Mapping[str, Any]) -> bool:
    """A write that took effect: 2xx, not an injected answer (a `hang` fault only delays the
    real handling, so a hung request that ends 2xx did take effect)."""
    return 200 <= int(entry["status"]) < 300 and entry.get("fault") in (None, "hang")


def omneo_writes(log: Sequence[Mapping[str, Any]], state: Mapping[str, Any]) -> list[Write]:
    """Order creates and updates Omneo accepted; an update names Omneo's numeric id, which the
    held orders map back to the ledger's order id."""
    ledger_id = {str(k): str(v.get("external_id")) for k, v in state["orders"].items()}
    writes: list[Write] = []
    for entry in log:
        if not _ok(entry):
            continue
        body = entry.get("body") if isinstance(entry.get("body"), dict) else {}
        assert isinstance(body, dict)
        path, method = entry["path"], entry["method"]
        if method == "POST" and path == OMNEO_ORDERS:
            writes.append(Write("omneo", str(body["external_id"]), "create", body.get("status")))
        elif method == "PUT" and path.startswith(OMNEO_ORDERS + "/"):
            remote = path.removeprefix(OMNEO_ORDERS + "/")
            writes.append(
                Write("omneo", ledger_id.get(remote, f"omneo#{remote}"), "update", body.get("status"))
            )
    return writes


def omneo_records(state: Mapping[str, Any]) -> list[Record]:
    """Every Transaction Omneo holds, under the ledger order it names."""
    return [
        Record("omneo", str(t.get("external_order_id")), str(t.get("external_id")))
        for t in state["transactions"].values()
    ]


def omnisend_writes(log: Sequence[Mapping[str, Any]]) -> list[Write]:
    """Order creates, replaces and patches Omnisend accepted (orders mode)."""
    writes: list[Write] = []
    for entry in log:
        if not _ok(entry):
            continue
        body = entry.get("body") if isinstance(entry.get("body"), dict) else {}
        assert isinstance(body, dict)
        path, method = entry["path"], entry["method"]
        state: Hashable | None = None
        if "paymentStatus" in body or "fulfillmentStatus" in body:
            state = omnisend_state(body.get("paymentStatus"), body.get("fulfillmentStatus"))
        if method == "POST" and path == OMNISEND_ORDERS:
            writes.append(Write("omnisend", str(body["orderID"]), "create", state))
        elif method in ("PUT", "PATCH") and path.startswith(OMNISEND_ORDERS + "/"):
            writes.append(Write("omnisend", path.removeprefix(OMNISEND_ORDERS + "/"), "update", state))
    return writes


async def placed_in_ledger(pool: asyncpg.Pool, external_ids: Iterable[str]) -> dict[str, list[str]]:
    """The client's external id of each order -> the ledger order ids placed with it."""
    keys = list(external_ids)
    rows = await pool.fetch(
        "SELECT data->>'external_id' AS key, data->>'order_id' AS order_id FROM events"
        " WHERE type = 'OrderPlaced' AND data->>'external_id' = ANY($1::text[])",
        keys,
    )
    placed: dict[str, list[str]] = {key: [] for key in keys}
    for row in rows:
        placed[row["key"]].append(row["order_id"])
    return placed


def history_of(
    placed: Mapping[str, Sequence[str]],
    envelopes: Iterable[bytes],
    omneo: tuple[Sequence[Mapping[str, Any]], Mapping[str, Any]],
    omnisend: Sequence[Mapping[str, Any]] | None,
) -> History:
    """The whole history: placements, expectations from the envelopes, the sandboxes' effects
    (`omneo` is its request log and state, `omnisend` its request log, or None when the run
    had no Omnisend worker)."""
    log, state = omneo
    destinations = ("omneo",) if omnisend is None else ("omneo", "omnisend")
    return History(
        placed=placed,
        expected=expected_from_envelopes(envelopes, destinations),
        writes=[*omneo_writes(log, state), *omnisend_writes(omnisend or [])],
        records=omneo_records(state),
    )

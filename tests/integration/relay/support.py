"""Shared helpers of the relay tests: domain events to append, settings, and the topic checker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ledger.domain import Amounts, LineItem, OrderPlaced, OrderStatusChanged, event_data
from ledger.store import NewEvent
from ledger_kernel.settings import KafkaSettings, RelaySettings, Settings, StoreSettings
from tests.harness.kafka import read_to_end

__all__ = ["read_to_end"]  # re-exported: the relay tests read the topic through this module


def placed(order_id: uuid.UUID, *, price: int = 1995, quantity: int = 2) -> NewEvent:
    """An `OrderPlaced` for one line (money in minor units)."""
    line = LineItem(
        line_id="l1",
        name="Socks",
        quantity=quantity,
        price_sell=price,
        price_current=price,
        price_original=price,
    )
    total = price * quantity
    event = OrderPlaced(
        order_id=order_id,
        currency="USD",
        status="pending",
        lines=(line,),
        amounts=Amounts(subtotal=total, total=total),
        placed_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    return NewEvent(
        type=event.type, data=event_data(event), metadata={"actor": "test", "source": "relay-tests"}
    )


def status(value: str) -> NewEvent:
    event = OrderStatusChanged(status=value)
    return NewEvent(type=event.type, data=event_data(event), metadata={"actor": "test"})


def stream_of(order_id: uuid.UUID) -> str:
    return f"order-{order_id}"


def relay_settings(
    database_url: str,
    bootstrap: str,
    topic: str,
    *,
    partitions: int = 3,
    batch_size: int = 500,
    backoff_initial_s: float = 0.05,
    backoff_max_s: float = 1.0,
    request_timeout_ms: int = 5_000,
) -> Settings:
    """Settings of a relay under test: own topic, short polls and back-off."""
    return Settings(
        database_url=database_url,
        kafka_bootstrap_servers=bootstrap,
        kafka=KafkaSettings(events_topic=topic, partitions=partitions, request_timeout_ms=request_timeout_ms),
        relay=RelaySettings(
            batch_size=batch_size, backoff_initial_s=backoff_initial_s, backoff_max_s=backoff_max_s
        ),
        store=StoreSettings(pool_min_size=1, pool_max_size=4, poll_interval_s=0.05),
    )


def relay_env(settings: Settings) -> dict[str, str]:
    """The same settings as environment variables, for a relay subprocess."""
    return {
        "LEDGER_DATABASE_URL": settings.database_url,
        "LEDGER_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "LEDGER_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
        "LEDGER_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "LEDGER_KAFKA__REQUEST_TIMEOUT_MS": str(settings.kafka.request_timeout_ms),
        "LEDGER_RELAY__BATCH_SIZE": str(settings.relay.batch_size),
        "LEDGER_RELAY__EXACTLY_ONCE": str(settings.relay.exactly_once).lower(),
        "LEDGER_RELAY__BACKOFF_INITIAL_S": str(settings.relay.backoff_initial_s),
        "LEDGER_RELAY__BACKOFF_MAX_S": str(settings.relay.backoff_max_s),
        "LEDGER_STORE__POLL_INTERVAL_S": str(settings.store.poll_interval_s),
        "LEDGER_STORE__POOL_MIN_SIZE": "1",
        "LEDGER_STORE__POOL_MAX_SIZE": "4",
        "LEDGER_LOG_JSON": "true",
    }


@dataclass
class TopicCheck:
    """What a topic holds compared with the committed log (docs/reliability.md#f1 pass criteria)."""

    missing: set[str] = field(default_factory=set)
    out_of_order: list[str] = field(default_factory=list)
    differing_duplicates: list[str] = field(default_factory=list)
    wrong_key: list[str] = field(default_factory=list)
    duplicates: int = 0
    records: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.out_of_order or self.differing_duplicates or self.wrong_key)


def check_topic(records: Iterable[Any], committed: Sequence[tuple[str, str, int]]) -> TopicCheck:
    """Check records against committed `(event_id, stream_id, version)`.

    Every committed event on the topic at least once; per order, first occurrences in version
    order (consumed per partition, so in partition order); every duplicate byte-identical
    (value and headers); key = order id.
    """
    result = TopicCheck()
    first: dict[str, tuple[bytes, list[tuple[str, bytes]]]] = {}
    last_version: dict[str, int] = {}
    for record in records:
        result.records += 1
        envelope = orjson.loads(record.value)
        event_id = envelope["event_id"]
        headers = list(record.headers)
        if record.key != envelope["order_id"].encode():
            result.wrong_key.append(event_id)
        seen = first.get(event_id)
        if seen is not None:
            result.duplicates += 1
            if seen != (record.value, headers):
                result.differing_duplicates.append(event_id)
            continue
        first[event_id] = (record.value, headers)
        stream, version = envelope["stream_id"], envelope["version"]
        if version != last_version.get(stream, 0) + 1:
            result.out_of_order.append(f"{stream} v{version} after v{last_version.get(stream, 0)}")
        last_version[stream] = max(version, last_version.get(stream, 0))
    result.missing = {event_id for event_id, _, _ in committed} - set(first)
    return result


async def committed_events(pool: Any) -> list[tuple[str, str, int]]:
    """Every committed event as `(event_id, stream_id, version)` in log order."""
    rows = await pool.fetch("SELECT event_id, stream_id, version FROM events ORDER BY tx, position")
    return [(str(r["event_id"]), r["stream_id"], r["version"]) for r in rows]


async def settled_head(pool: Any, timeout_s: float = 30.0) -> Any:
    """The checkpoint of the last committed event, once the (cluster-wide) fence has passed it.

    Other tests' transactions anywhere on the server can hold the fence for a moment, so the
    fenced head alone may lag what this test committed.
    """
    from ledger.store import Checkpoint

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    row = await pool.fetchrow("SELECT tx, position FROM events ORDER BY tx DESC, position DESC LIMIT 1")
    if row is None:
        return Checkpoint(0, 0)
    last = Checkpoint(row["tx"], row["position"])
    sql = "SELECT $1::xid8 < pg_snapshot_xmin(pg_current_snapshot())"
    while not await pool.fetchval(sql, last.tx):
        assert loop.time() < deadline, "the xid8 fence did not pass the last committed event"
        await asyncio.sleep(0.02)
    return last

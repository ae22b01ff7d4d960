"""One `orders.events` envelope: the relay's bytes, the documented fields and the fan-out's
parse and re-encoding agree (`ledger_kernel.wire.envelope`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from consumers.fanout.mapping_types import Envelope, EnvelopeError
from ledger.domain import PlaceOrder, decide, event_data, evolve
from ledger.domain.views import JSON_MONEY, order_to_json
from ledger.relay.message import LogEvent, build_message
from ledger_kernel.wire.envelope import ENVELOPE_KEYS, EventEnvelope
from ledger_kernel.wire.streams import stream_id_of

NOW = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def relay_bytes() -> bytes:
    """The relay's record value for a placed order with money and metadata."""
    command = PlaceOrder.model_validate(
        {
            "status": "pending",
            "total": Decimal("19.90"),
            "items": [
                {
                    "name": "Scarf",
                    "quantity": 1,
                    "price_current": "19.90",
                    "price_sell": "19.90",
                    "price_original": "19.90",
                }
            ],
        }
    )
    order_id = uuid.uuid4()
    (event,) = decide(command, None, now=NOW, ids=lambda: order_id)
    order = evolve(None, event, version=1, recorded_at=NOW)
    log_event = LogEvent(
        41,
        7,
        stream_id_of(order_id),
        1,
        uuid.uuid4(),
        event.type,
        event.schema_version,
        orjson.dumps(event_data(event), default=str).decode(),
        '{"source": "tests", "actor": "shop"}',
        NOW,
    )
    return build_message(log_event, order_to_json(order, money=JSON_MONEY)).value


def test_the_relay_writes_the_documented_keys_in_their_order() -> None:
    assert list(orjson.loads(relay_bytes())) == list(ENVELOPE_KEYS)
    assert ENVELOPE_KEYS == (
        "event_id", "order_id", "stream_id", "version", "position", "type", "schema_version",
        "data", "metadata", "recorded_at", "order",
    )  # fmt: skip


def test_the_kernel_parse_reads_the_relays_bytes_with_exact_money() -> None:
    parsed = EventEnvelope.parse(relay_bytes())
    assert parsed.stream_id == f"order-{parsed.order_id}"
    assert (parsed.version, parsed.position, parsed.type, parsed.schema_version) == (1, 41, "OrderPlaced", 1)
    assert parsed.order["total"] == Decimal("19.90")
    assert parsed.recorded_at_time() == NOW
    assert parsed.metadata == {"actor": "shop", "source": "tests"}


def test_the_fanout_re_encodes_an_envelope_to_the_relays_exact_bytes() -> None:
    raw = relay_bytes()
    envelope = Envelope.from_bytes(raw)
    assert envelope.to_bytes() == raw  # stream_id and schema_version included (they were lost)


def test_an_envelope_parked_without_stream_id_and_schema_version_still_parses() -> None:
    old = orjson.loads(relay_bytes())
    del old["stream_id"], old["schema_version"]
    envelope = Envelope.from_bytes(orjson.dumps(old))
    assert (envelope.stream_id, envelope.schema_version) == (f"order-{old['order_id']}", 1)


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'{"event_id": "e1"}', b"{" * 100_000])
def test_what_is_not_an_envelope_is_an_envelope_error(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.from_bytes(raw)

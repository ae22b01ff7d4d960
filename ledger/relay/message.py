"""The `orders.events` message of one stored event (docs/architecture.md#kafka), serialized deterministically.

The envelope's fields and their order are the kernel's (`ledger_kernel.wire.envelope`); this
module makes the Kafka record around it fast: text caches for data and metadata, fixed headers.

At-least-once delivery means a crash can re-publish an event, and consumers may compare a
duplicate with what they already saw; so the same event must always give the same bytes.
That holds because:

- the envelope's keys are written in one fixed order (the documented one);
- `data`, `metadata` and `order` are serialized with sorted keys (their dict order depends on
  where they came from: jsonb, pydantic, a cache hit or a re-fold after a restart);
- `Decimal` (money in the order view, major units) is written as a JSON *number* from its
  digits, in plain fixed-point notation with the currency's decimals (`19.90`, `1500` for JPY):
  never through a float, never in exponent notation (as `ledger.domain.views` asks, so the
  envelope's `order` reads like the HTTP API's). Read it exactly with
  `json.loads(s, parse_float=Decimal)`;
- datetimes are ISO 8601 with their offset (`+00:00`, as in the order view); UUIDs are
  canonical lower-case strings;
- the Kafka record timestamp is the event's `recorded_at`, not the publish time.

`data` is published in the event type's *current* schema version (old stored rows are upcast),
with that version in `schema_version`: consumers only ever need to understand current shapes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

import orjson

from ledger.store.records import Checkpoint, RecordedEvent
from ledger_kernel.observability import get_logger
from ledger_kernel.wire.codec import dumps_canonical
from ledger_kernel.wire.envelope import encode_envelope
from ledger_kernel.wire.streams import order_id_of

CONTENT_TYPE = b"application/json"
_log = get_logger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

#: `(type, stored schema_version, data) -> (current schema_version, data)`.
Upcast = Callable[[str, int, dict[str, Any]], tuple[int, dict[str, Any]]]


class LogEvent(NamedTuple):
    """A stored event as the relay reads it (`ledger.store.reads.LOG_COLUMNS`): like
    `RecordedEvent` without the hash chain, `data` and `metadata` as the stored JSON text.

    The text is decoded once for the envelope (`orjson`, then re-serialized with sorted keys,
    so the bytes equal those of the decoded dict: tests compare both) and validated as JSON by
    `decode_event` for the fold (pydantic's Rust JSON path). Against the decoded-dict path this
    skips the jsonb codec's Python call per value, and validation is faster (bench events,
    mean per event: 6.4 -> 5.2 us); with the other savings of this path the relay's read and
    encode went from ~163k to ~139k instructions an event (valgrind, bench/relay.py's events).
    """

    position: int
    tx: int
    stream_id: str
    version: int
    event_id: UUID
    type: str
    schema_version: int
    data: str
    metadata: str
    recorded_at: datetime

    @property
    def checkpoint(self) -> Checkpoint:
        """The global-log checkpoint just after this event."""
        return Checkpoint(self.tx, self.position)


# `build_message` and `OrderStates.advance` unpack `event[:10]` of either kind of event.
if RecordedEvent._fields[:10] != LogEvent._fields:  # pragma: no cover - fails at import, not with wrong bytes
    raise ImportError("LogEvent and RecordedEvent no longer share their first ten fields")


class OutMessage(NamedTuple):
    """One Kafka record ready to send, with the log position (`checkpoint`) it stands for.

    A NamedTuple: built once per event, and cheaper to build than a frozen dataclass; it keeps
    `tx` and `position` rather than a `Checkpoint`, one object fewer per event.
    """

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int
    tx: int
    position: int
    event_id: str
    stream_id: str
    version: int

    @property
    def checkpoint(self) -> Checkpoint:
        """The global-log checkpoint just after this record's event."""
        return Checkpoint(self.tx, self.position)


#: Builds an `OutMessage` from a tuple in C, without the Python-level `__new__` a NamedTuple
#: call goes through (~0.4 us an event).
_new_message = tuple.__new__


def identity_upcast(type_: str, schema_version: int, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """No upcasting: publish stored data as is."""
    return schema_version, data


def build_message(
    event: RecordedEvent | LogEvent,
    order: Mapping[str, Any] | bytes | None,
    *,
    upcast: Upcast = identity_upcast,
) -> OutMessage:
    """The record of `event`; `order` is the order view after it (None if it has none), as a
    mapping or already serialized by `dumps_canonical` (the relay's `OrderStates` gives bytes).

    `data` and `metadata` may be decoded (`RecordedEvent`) or JSON text (`LogEvent`): text is
    decoded first, so both give the same bytes.
    """
    # One unpacking instead of a dozen attribute lookups (`RecordedEvent` has the same first ten).
    (position, tx, stream_id, version, event_id, type_, stored_version, stored, metadata, recorded_at) = (
        event[:10]
    )
    order_id = order_id_of(stream_id)
    # The text caches (see `_DATA_CACHE`), looked up here: a status change nearly always hits.
    cached = _DATA_CACHE.get(stored) if type(stored) is str else None
    if cached is not None and cached[0] == type_ and cached[1] == stored_version and cached[2] is upcast:
        schema_version, data_json = cached[3], cached[4]
    else:
        schema_version, data_json = _data_json(type_, stored_version, stored, upcast)
    metadata_json = _METADATA_CACHE.get(metadata) if type(metadata) is str else None
    if metadata_json is None:
        metadata_json = _metadata_json(metadata)
    event_text = str(event_id)
    order_json = None
    if order is not None:
        order_json = orjson.Fragment(order if isinstance(order, bytes) else dumps_canonical(order))
    value = encode_envelope(
        event_text,
        order_id,
        stream_id,
        version,
        position,
        type_,
        schema_version,
        data_json,
        metadata_json,
        recorded_at,
        order_json,
    )
    return _new_message(
        OutMessage,
        (
            (stream_id if order_id is None else order_id).encode(),
            value,
            [("event_id", event_text.encode()), *_fixed_headers(type_, schema_version)],
            (recorded_at - _EPOCH) // _MS,
            tx,
            position,
            event_text,
            stream_id,
            version,
        ),
    )


#: Canonical JSON of short stored texts that recur (`_SHORT` chars at most), looked up by
#: `build_message`: status changes repeat a few values, and the events of one command share their
#: metadata. Decoding and re-encoding such a text costs ~0.7 us, a hit ~0.1 us. A data entry
#: holds what it depends on besides the text (type, stored version, upcasting). Cleared when full.
_SHORT = 256
_CACHE_LIMIT = 4096
_DATA_CACHE: dict[str, tuple[str, int, Upcast, int, orjson.Fragment]] = {}
_METADATA_CACHE: dict[str, orjson.Fragment] = {}


def _data_json(
    type_: str, stored_version: int, stored: str | dict[str, Any], upcast: Upcast
) -> tuple[int, orjson.Fragment]:
    """`(schema_version, canonical data JSON)` of an event (upcast to the current shape); a
    short text is remembered."""
    decoded = orjson.loads(stored) if isinstance(stored, str) else stored
    try:
        schema_version, data = upcast(type_, stored_version, decoded)
    except Exception as exc:
        return stored_version, _as_stored(type_, stored_version, decoded, exc)
    if not isinstance(stored, str):
        return schema_version, orjson.Fragment(dumps_canonical(data))
    fragment = orjson.Fragment(dumps_canonical(data))
    if len(stored) <= _SHORT:
        if len(_DATA_CACHE) >= _CACHE_LIMIT:
            _DATA_CACHE.clear()
        _DATA_CACHE[stored] = (type_, stored_version, upcast, schema_version, fragment)
    return schema_version, fragment


def _as_stored(type_: str, stored_version: int, data: dict[str, Any], exc: Exception) -> orjson.Fragment:
    """Canonical JSON of data this code cannot upcast (a newer writer's version, a broken upcaster).

    Raising would stop the relay on this event, and every order behind it, until the code is
    upgraded; published as stored, with its stored `schema_version`, consumers can tell (and park
    the order: its state is `null`, the fold fails the same way). Not cached: rare, and logged each time.
    """
    _log.warning("relay.upcast_failed", type=type_, schema_version=stored_version, error=repr(exc))
    return orjson.Fragment(dumps_canonical(data))


def _metadata_json(metadata: str | dict[str, Any]) -> orjson.Fragment:
    """Canonical JSON of an event's metadata; a short text is remembered."""
    if not isinstance(metadata, str):
        return orjson.Fragment(dumps_canonical(metadata))
    fragment = orjson.Fragment(dumps_canonical(orjson.loads(metadata)))
    if len(metadata) <= _SHORT:
        if len(_METADATA_CACHE) >= _CACHE_LIMIT:
            _METADATA_CACHE.clear()
        _METADATA_CACHE[metadata] = fragment
    return fragment


@functools.cache
def _fixed_headers(type_: str, schema_version: int) -> tuple[tuple[str, bytes], ...]:
    """The headers after `event_id`: few distinct values, so built once each."""
    return (
        ("type", type_.encode()),
        ("schema_version", str(schema_version).encode()),
        ("content-type", CONTENT_TYPE),
    )

"""Checks and serialization of an append request, done before any database work.

jsonb rejects `\\u0000` and PostgreSQL text rejects NUL, so a NUL anywhere would fail halfway
through an append with an obscure error; it is caught here with a clear one instead. Event
data and metadata are serialized once with orjson and passed to the append function as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson

from ledger.store.errors import (
    EventTooLarge,
    InvalidAppend,
    InvalidEventData,
    InvalidEventId,
    InvalidStreamId,
)
from ledger.store.event_types import EventRegistry
from ledger.store.records import ExpectedVersion, IdempotencyRequest, NewEvent
from ledger_kernel.settings import StoreSettings

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: Default stream ids: a lowercase category, a dash and a lowercase UUID (`order-<uuid>`).
STREAM_ID_PATTERN = re.compile(rf"[a-z][a-z0-9_]{{0,49}}-{_UUID}")
_MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class PreparedAppend:
    """A validated append, in the shape of the `ledger_append` SQL function's arguments."""

    stream_id: str
    expected: int
    event_ids: list[UUID]
    types: list[str]
    schema_versions: list[int]
    data: list[str]
    metadata: list[str]
    idempotency: IdempotencyRequest | None
    outcome: str | None

    def fast_args(self) -> tuple[Any, ...] | None:
        """Arguments of the single-statement fast path (`statements.APPEND_ONE_SQL`), or None
        when the append needs the function (several events, ANY/STREAM_EXISTS, a key)."""
        if len(self.event_ids) != 1 or self.expected < 0 or self.idempotency is not None:
            return None
        return (
            self.stream_id,
            self.expected,
            self.event_ids[0],
            self.types[0],
            self.schema_versions[0],
            self.data[0],
            self.metadata[0],
        )

    def args(self) -> tuple[Any, ...]:
        """Positional arguments of `ledger_append`."""
        idem = self.idempotency
        return (
            self.stream_id,
            self.expected,
            self.event_ids,
            self.types,
            self.schema_versions,
            self.data,
            self.metadata,
            idem.client_id if idem else None,
            idem.key if idem else None,
            idem.fingerprint if idem else None,
            self.outcome,
        )


def _contains_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


def _event_id(value: object, index: int) -> UUID:
    """Event ids arrive typed as UUID, but hostile callers can pass anything."""
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise InvalidEventId(f"event #{index}: event id {value!r} is not a UUID") from None


def to_json(value: Mapping[str, Any], what: str) -> str:
    """Serialize a JSON object for jsonb; `InvalidEventData` when it cannot be stored."""
    if type(value) is not dict:  # the exact-type test is the fast path; ABC checks are slow
        if not isinstance(value, Mapping):
            raise InvalidEventData(f"{what} must be a JSON object, got {type(value).__name__}")
        value = dict(value)
    try:
        text = orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise InvalidEventData(f"{what} is not serializable as JSON: {exc}") from exc
    # orjson writes NUL as \u0000; the text can also contain an escaped backslash followed by
    # "u0000", so confirm on the value before refusing.
    if "\\u0000" in text and _contains_nul(value):
        raise InvalidEventData(f"{what} contains a NUL character (\\u0000), which PostgreSQL cannot store")
    return text


def expected_value(expected_version: int | ExpectedVersion) -> int:
    """The SQL value of an expected version."""
    if isinstance(expected_version, ExpectedVersion):
        return int(expected_version)
    if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
        raise InvalidAppend(
            f"expected_version must be an int >= 0 or an ExpectedVersion, got {expected_version!r}"
        )
    return expected_version


def check_key(value: object, what: str) -> str:
    """An idempotency client id or key: a non-empty printable string of bounded length."""
    if not isinstance(value, str) or not value or len(value) > _MAX_KEY_LENGTH or not value.isprintable():
        raise InvalidAppend(
            f"{what} must be a non-empty printable string of at most {_MAX_KEY_LENGTH} characters"
        )
    return value


def prepare_append(
    stream_id: str,
    events: Sequence[NewEvent],
    expected_version: int | ExpectedVersion,
    idempotency: IdempotencyRequest | None,
    *,
    registry: EventRegistry,
    settings: StoreSettings,
    stream_pattern: re.Pattern[str] = STREAM_ID_PATTERN,
) -> PreparedAppend:
    """Validate and serialize an append; raises an `InvalidInput` subclass on bad input."""
    if not isinstance(stream_id, str) or not stream_pattern.fullmatch(stream_id):
        raise InvalidStreamId(f"stream id {stream_id!r} does not match {stream_pattern.pattern}")
    expected = expected_value(expected_version)
    if not events:
        raise InvalidAppend("an append needs at least one event")
    if len(events) > settings.max_events_per_append:
        raise InvalidAppend(
            f"{len(events)} events in one append; the limit is {settings.max_events_per_append}"
        )
    event_ids: list[UUID] = []
    types: list[str] = []
    versions: list[int] = []
    data: list[str] = []
    metadata: list[str] = []
    for index, event in enumerate(events):
        if not isinstance(event, NewEvent):
            raise InvalidAppend(f"event #{index} is a {type(event).__name__}, not a NewEvent")
        event_id = _event_id(event.event_id, index)
        current = registry.current_version(event.type)
        if event.schema_version is not None and event.schema_version != current:
            raise InvalidEventData(
                f"event #{index} ({event.type}) has schema version {event.schema_version}; "
                f"new events are written at the current version {current}"
            )
        data_text = to_json(event.data, f"event #{index} ({event.type}) data")
        if "type" in event.data:
            raise InvalidEventData(f"event #{index} ({event.type}): data must not contain 'type'")
        meta_text = to_json(event.metadata, f"event #{index} ({event.type}) metadata")
        size = len(data_text) + len(meta_text)
        if size * 4 > settings.max_event_bytes:  # a code point is at most 4 bytes: count only when close
            size = len(data_text.encode()) + len(meta_text.encode())
        if size > settings.max_event_bytes:
            raise EventTooLarge(
                f"event #{index} ({event.type}) is {size} bytes; the limit is {settings.max_event_bytes}"
            )
        event_ids.append(event_id)
        types.append(event.type)
        versions.append(current)
        data.append(data_text)
        metadata.append(meta_text)
    if len(set(event_ids)) != len(event_ids):
        raise InvalidEventId("an event id is repeated within one append")
    outcome = None
    if idempotency is not None:
        check_key(idempotency.client_id, "idempotency client_id")
        check_key(idempotency.key, "idempotency key")
        check_key(idempotency.fingerprint, "idempotency fingerprint")
        outcome = to_json(idempotency.outcome, "idempotency outcome")
    return PreparedAppend(
        stream_id, expected, event_ids, types, versions, data, metadata, idempotency, outcome
    )

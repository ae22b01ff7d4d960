"""The personal-data codec: seals personal fields on append, opens them at the edges of reading.

The event store calls `encode` before an append and `decode` after reading a stream (its
`codec` hook, `ledger.store.records.EventCodec`); the read models' routes, the export and the
fan-out workers open JSON with `reveal`. Everything between (the log, the relay's fold, Kafka,
the read models' rows) carries the sealed form. A field whose key was destroyed reads as
`None` (docs/privacy.md#erased). A part token (`ledger.privacy.cipher`) opens into the fields
of the object that holds it: those the object has (the sealed form keeps them as null), so a
read-model row that kept only some of a part's fields (the email column) gets only those.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from uuid import UUID

from ledger.privacy.cipher import (
    PART_PREFIX,
    TOKEN_MARK,
    TOKEN_PREFIX,
    DataKey,
    Keyring,
    decrypt_part,
    decrypt_token,
    token_key_id,
)
from ledger.privacy.fields import PERSONAL_EVENT_TYPES, seal_details, subject_hints
from ledger.privacy.keystore import KeyStore
from ledger.store import Encoded, NewDataKey, NewEvent, RecordedEvent
from ledger_kernel.wire.streams import order_id_of

__all__ = ["EMAIL_KEY", "SUBJECT_KEY", "PersonalDataCodec", "subject_for"]

T = TypeVar("T")
_MAX_CACHED = 100_000
#: Metadata keys of a personal event: its data subject and its email's keyed blind index.
SUBJECT_KEY = "pd_subject"
EMAIL_KEY = "pd_email"


def subject_for(stream_id: str, profile_id: str | None, email_index: str | None) -> str:
    """Who an order's personal data belongs to: the profile, else the email's blind index, else the order."""
    if profile_id:
        return f"profile:{profile_id}"
    if email_index:
        return f"email:{email_index}"
    return f"order:{order_id_of(stream_id) or stream_id}"


def _collect(obj: Any, out: set[UUID]) -> None:
    if isinstance(obj, str):
        if obj.startswith(TOKEN_MARK):
            key_id = token_key_id(obj)
            if key_id is not None:
                out.add(key_id)
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect(value, out)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _collect(value, out)


def _key_of(token: str, keys: dict[UUID, DataKey | None]) -> DataKey | None:
    key_id = token_key_id(token)
    return keys.get(key_id) if key_id is not None else None


def _open(obj: Any, keys: dict[UUID, DataKey | None]) -> Any:
    if isinstance(obj, str):
        if not obj.startswith(TOKEN_MARK):
            return obj
        key = _key_of(obj, keys)
        # A part token outside an object has no fields to open into; an unknown kind never opens.
        return decrypt_token(key, obj) if key is not None and obj.startswith(TOKEN_PREFIX) else None
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        parts: list[dict[str, Any]] = []
        for k, v in obj.items():
            if isinstance(v, str) and v.startswith(PART_PREFIX):
                out[k] = None
                key = _key_of(v, keys)
                values = None if key is None else decrypt_part(key, v)
                if values is not None:
                    parts.append(values)
            else:
                out[k] = _open(v, keys)
        for values in parts:
            for name, value in values.items():
                if name in out:
                    out[name] = value
        return out
    if isinstance(obj, list):
        return [_open(v, keys) for v in obj]
    return obj


class PersonalDataCodec:
    """Seals and opens personal fields with per-subject keys from a `KeyStore`.

    Keys are cached for `cache_s` (an erasure by another process is seen within that time;
    `forget` drops the cache at once in the erasing process).
    """

    def __init__(
        self,
        keys: KeyStore,
        keyring: Keyring,
        *,
        cache_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = keys
        self.keyring = keyring
        self.cache_s = cache_s
        self.clock = clock
        self._subjects: dict[str, tuple[float, DataKey]] = {}
        self._keys: dict[UUID, tuple[float, DataKey | None]] = {}
        #: New keys handed to appends and not settled yet, with the `forget` generation they
        #: were made in: a key settled after a `forget` is not cached (its subject may be erased).
        self._pending: dict[UUID, tuple[int, DataKey]] = {}
        self._generation = 0

    def forget(self) -> None:
        """Drop every cached key (after an erasure)."""
        self._generation += 1
        self._subjects.clear()
        self._keys.clear()

    def blind_index(self, email: str) -> str:
        return self.keyring.blind_index(email)

    # -- writing -----------------------------------------------------------------------------

    async def encode(self, stream_id: str, events: Sequence[NewEvent]) -> Sequence[NewEvent]:
        """`events` with their personal fields sealed under their subject's stored key; the
        subject and the email's blind index go into the metadata (`pd_subject`, `pd_email`),
        where the append indexes them (migration 0012's partial indexes on `events`)."""
        encoded, _ = await self._encode(stream_id, events, new_key_ok=False)
        return encoded

    async def encode_append(self, stream_id: str, events: Sequence[NewEvent]) -> Encoded:
        """As `encode`, but a subject whose key is not cached is sealed under a new key the
        append stores in its own statement (`EventStore`: no key-store round trip before it);
        the store calls `settle`, and `encode` again if another append stored a key first."""
        return await self._encode(stream_id, events, new_key_ok=True)

    def settle(self, key: NewDataKey, *, stored: bool, live: tuple[UUID, bytes] | None = None) -> None:
        """Cache a new key the append stored, or else the subject's stored key the append saw
        (`live`, wrapped), unless `forget` ran meanwhile (an erasure: the key may be destroyed)."""
        pending = self._pending.pop(key.key_id, None)
        if pending is None or pending[0] != self._generation:
            return
        if stored:
            self._cache(key.subject, pending[1])
        elif live is not None:
            self._cache(key.subject, self.keyring.unwrap(*live))

    async def _encode(self, stream_id: str, events: Sequence[NewEvent], *, new_key_ok: bool) -> Encoded:
        if not any(event.type in PERSONAL_EVENT_TYPES for event in events):
            return Encoded(events, None)
        out = list(events)
        new_key: NewDataKey | None = None
        fresh: DataKey | None = None
        for i, event in enumerate(events):
            if event.type not in PERSONAL_EVENT_TYPES:
                continue
            profile, email = subject_hints(dict(event.data))
            email_index = self.keyring.blind_index(email) if email else None
            subject = subject_for(stream_id, profile, email_index)
            key = self._cached_key(subject)
            if key is None and fresh is not None and new_key is not None and new_key.subject == subject:
                key = fresh
            elif key is None and new_key_ok and new_key is None:
                key = fresh = DataKey.generate(uuid.uuid4())
                new_key = NewDataKey(key.key_id, subject, self.keyring.wrap(key), self.keyring.kek_id)
                if len(self._pending) >= _MAX_CACHED:  # keys of encodes that raised never settle
                    self._pending.clear()
                self._pending[key.key_id] = (self._generation, key)
            elif key is None:  # one new key per append at most: other subjects' keys are stored first
                key = await self._stored_key(subject)
            metadata = {**event.metadata, SUBJECT_KEY: subject}
            if email_index is not None:
                metadata[EMAIL_KEY] = email_index
            out[i] = replace(event, data=seal_details(dict(event.data), key), metadata=metadata)
        return Encoded(out, new_key)

    def _cached_key(self, subject: str) -> DataKey | None:
        cached = self._subjects.get(subject)
        return cached[1] if cached is not None and cached[0] > self.clock() else None

    def _cache(self, subject: str, key: DataKey) -> None:
        until = self.clock() + self.cache_s
        if len(self._subjects) >= _MAX_CACHED:
            self._subjects.clear()
        self._subjects[subject] = (until, key)
        self._keys[key.key_id] = (until, key)

    async def _stored_key(self, subject: str) -> DataKey:
        key = self._cached_key(subject)
        if key is None:
            key = await self.store.live_key(subject)
            self._cache(subject, key)
        return key

    # -- reading -----------------------------------------------------------------------------

    async def _keys_for(self, key_ids: Collection[UUID]) -> dict[UUID, DataKey | None]:
        now = self.clock()
        found: dict[UUID, DataKey | None] = {}
        missing = []
        for key_id in key_ids:
            cached = self._keys.get(key_id)
            if cached is not None and (cached[1] is None or cached[0] > now):
                found[key_id] = cached[1]  # a destroyed key stays destroyed: cached for good
            else:
                missing.append(key_id)
        if missing:
            if len(self._keys) >= _MAX_CACHED:
                self._keys.clear()
            for key_id, key in (await self.store.keys(missing)).items():
                self._keys[key_id] = (now + self.cache_s, key)
                found[key_id] = key
        return found

    async def reveal(self, obj: T) -> T:
        """`obj` (JSON-like: dicts, lists, strings) with every token opened; a destroyed key's
        fields read as None."""
        ids: set[UUID] = set()
        _collect(obj, ids)
        if not ids:
            return obj
        result: T = _open(obj, await self._keys_for(ids))
        return result

    async def decode(self, events: list[RecordedEvent]) -> list[RecordedEvent]:
        """Stored events with their personal fields opened (what a stream read returns)."""
        personal = [i for i, event in enumerate(events) if event.type in PERSONAL_EVENT_TYPES]
        if not personal:
            return events
        opened = await self.reveal([events[i].data for i in personal])
        out = list(events)
        for i, data in zip(personal, opened, strict=True):
            out[i] = events[i]._replace(data=data)
        return out

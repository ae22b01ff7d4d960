"""Erasing a data subject, exporting what is held about them, and the erasure report.

A subject is named by a reference: ``profile:<profile id>``, ``email:<address>`` or
``order:<order id>`` (docs/privacy.md#erase). An erasure destroys every live key of the
subjects the reference reaches (crypto-shredding: one atomic UPDATE), then appends a
`PersonalDataErased` event to each affected order that does not already end erased, records
the erasure (no personal data: subjects are profile ids, email HMACs or order ids) and drops
the stored idempotency outcomes of those orders (they hold response bodies in plain text).
Each step is idempotent, so a retry after a crash finishes the job, and erasing twice changes
nothing the second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from ledger.domain.events import PersonalDataErased, event_data
from ledger.privacy.codec import PersonalDataCodec
from ledger.privacy.fields import PERSONAL_EVENT_TYPES
from ledger.privacy.keystore import KeyStore
from ledger.store import ANY, EventStore, Executor, NewEvent
from ledger_kernel.wire.streams import order_id_of, stream_id_of

__all__ = ["Erasure", "InvalidSubject", "PrivacyService", "SubjectNotFound", "parse_reference"]

_KINDS = ("profile", "email", "order")


class InvalidSubject(ValueError):
    """A subject reference that is not `profile:`, `email:` or `order:` followed by a value."""


class SubjectNotFound(LookupError):
    """No order and no key is held for this subject."""


@dataclass(frozen=True, slots=True)
class Reference:
    kind: str
    value: str

    def label(self, codec: PersonalDataCodec) -> str:
        """The reference as stored and logged: an email only as its blind index."""
        return (
            f"email:{codec.blind_index(self.value)}" if self.kind == "email" else f"{self.kind}:{self.value}"
        )


def parse_reference(text: str) -> Reference:
    kind, sep, value = text.partition(":")
    value = value.strip()
    if not sep or kind not in _KINDS or not value or len(value) > 254:
        raise InvalidSubject("a subject is profile:<profile id>, email:<address> or order:<order id>")
    if kind == "order":
        try:
            value = str(UUID(value))
        except ValueError:
            raise InvalidSubject("order:<order id> takes the order's UUID") from None
    return Reference(kind, value)


@dataclass(frozen=True, slots=True)
class Erasure:
    """What one erase call did."""

    erasure_id: UUID | None
    subject: str
    subjects: tuple[str, ...]
    orders: tuple[str, ...]
    keys_destroyed: int
    events_appended: int
    already_erased: bool
    erased_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "erasure_id": None if self.erasure_id is None else str(self.erasure_id),
            "subject": self.subject,
            "subjects": list(self.subjects),
            "orders": [order_id_of(s) or s for s in self.orders],
            "keys_destroyed": self.keys_destroyed,
            "events_appended": self.events_appended,
            "already_erased": self.already_erased,
            "erased_at": self.erased_at.isoformat(),
        }


#: The subjects a reference reaches: itself, and every subject of the orders it names (an order
#: whose email changed holds two), with each subject's orders. `privacy_orders` is a view over
#: the events' metadata (migration 0012): every lookup is by value (`= ANY`, a correlated
#: subquery), so each is an index probe; a join on it would scan every personal event.
_RESOLVE_SQL = """
WITH t AS (
    SELECT DISTINCT stream_id FROM privacy_orders
     WHERE subject = ANY($1::text[])
        OR ($2::text IS NOT NULL AND email_hmac = $2)
        OR ($3::text IS NOT NULL AND stream_id = $3)
), s AS (
    SELECT unnest($1::text[]) AS subject
    UNION SELECT p.subject FROM privacy_orders p WHERE p.stream_id = ANY(ARRAY(SELECT stream_id FROM t))
)
SELECT s.subject,
       ARRAY(SELECT DISTINCT o.stream_id FROM privacy_orders o WHERE o.subject = s.subject ORDER BY 1) AS streams,
       EXISTS (SELECT 1 FROM privacy_keys k WHERE k.subject = s.subject) AS has_keys
  FROM s
"""
#: Orders that need a PersonalDataErased event: none yet, or personal data written after the last.
_PENDING_SQL = """
SELECT stream_id FROM events WHERE stream_id = ANY($1::text[])
 GROUP BY stream_id
HAVING coalesce(max(version) FILTER (WHERE type = 'PersonalDataErased'), 0)
     < coalesce(max(version) FILTER (WHERE type = ANY($2::text[])), 0)
"""
_RECORD_SQL = """
INSERT INTO privacy_erasures (erasure_id, subject, requested_by, basis, requested_at, streams)
VALUES ($1, $2, $3, $4, $5, $6)
"""
_DROP_OUTCOMES_SQL = "DELETE FROM idempotency_keys WHERE stream_id = ANY($1::text[])"


@dataclass
class PrivacyService:
    """Erasure, export and report over the event store, the key store and the index tables."""

    db: Executor
    store: EventStore
    codec: PersonalDataCodec
    keys: KeyStore
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    intake_retention_hours: float | None = None
    places: Sequence[ReportPlace] = ()

    async def _resolve(self, ref: Reference) -> tuple[list[str], list[str], bool]:
        """(subjects, their order streams, whether any key was ever held for them)."""
        direct: list[str] = []
        email_index = stream = None
        if ref.kind == "profile":
            direct.append(f"profile:{ref.value}")
        elif ref.kind == "email":
            email_index = self.codec.blind_index(ref.value)
            direct.append(f"email:{email_index}")
        else:
            stream = stream_id_of(ref.value)
            direct.append(f"order:{ref.value}")
        rows = await self.db.fetch(_RESOLVE_SQL, direct, email_index, stream)
        subjects = sorted(r["subject"] for r in rows if r["streams"] or r["has_keys"])
        streams = sorted({s for r in rows for s in r["streams"]})
        return subjects, streams, any(r["has_keys"] for r in rows)

    async def erase(self, reference: str, *, requested_by: str, basis: str) -> Erasure:
        """Erase a subject (see the module doc); `SubjectNotFound` when nothing is held."""
        ref = parse_reference(reference)
        label = ref.label(self.codec)
        subjects, streams, known = await self._resolve(ref)
        if not streams and not known:
            raise SubjectNotFound(label)
        now = self.clock()
        destroyed = await self.keys.destroy(subjects, erased_by=requested_by, basis=basis)
        self.codec.forget()
        if destroyed:
            # Orders appended under a destroyed key between the first look and the destruction
            # (committed before it) get their PersonalDataErased too; appends committed after it
            # used a new key (a new subject's first key is stored by its append's statement),
            # or a key this or another process still held, which the next erasure settles.
            subjects_now, streams, _ = await self._resolve(ref)
            subjects = sorted({*subjects, *subjects_now})
        pending = [
            r["stream_id"] for r in await self.db.fetch(_PENDING_SQL, streams, sorted(PERSONAL_EVENT_TYPES))
        ]
        if not destroyed and not pending:
            return Erasure(None, label, tuple(subjects), tuple(streams), 0, 0, True, now)
        erasure_id = uuid.uuid4()
        event = PersonalDataErased(
            erasure_id=erasure_id, requested_by=requested_by, basis=basis, erased_at=now
        )
        metadata = {"actor": requested_by, "source": "privacy", "erasure_id": str(erasure_id)}
        for stream in pending:
            await self.store.append(
                stream,
                [
                    NewEvent(
                        type=event.type,
                        data=event_data(event),
                        metadata=metadata,
                        event_id=uuid.uuid5(erasure_id, stream),
                    )
                ],
                ANY,
            )
        await self.db.execute(_RECORD_SQL, erasure_id, label, requested_by, basis, now, streams)
        await self.db.execute(_DROP_OUTCOMES_SQL, streams)
        return Erasure(
            erasure_id, label, tuple(subjects), tuple(streams), len(destroyed), len(pending), False, now
        )

    async def export(self, reference: str) -> dict[str, Any]:
        """Every personal datum held about a subject, per order and per event, opened."""
        ref = parse_reference(reference)
        subjects, streams, known = await self._resolve(ref)
        if not streams and not known:
            raise SubjectNotFound(ref.label(self.codec))
        orders = []
        for stream in streams:
            events = await self.store.read_stream(stream)
            held = [
                {
                    "version": e.version,
                    "type": e.type,
                    "recorded_at": e.recorded_at.isoformat(),
                    "personal_data": _personal_part(e.data),
                }
                for e in events
                if e.type in PERSONAL_EVENT_TYPES
            ]
            erased = [e.recorded_at.isoformat() for e in events if e.type == "PersonalDataErased"]
            orders.append({"order_id": order_id_of(stream) or stream, "events": held, "erased_at": erased})
        return {"subject": ref.label(self.codec), "subjects": subjects, "orders": orders}

    async def report(self, reference: str) -> dict[str, Any]:
        """Per place: what was erased for a subject and when, and what is still pending."""
        ref = parse_reference(reference)
        label = ref.label(self.codec)
        subjects, streams, known = await self._resolve(ref)
        if not streams and not known:
            raise SubjectNotFound(label)
        keys = await self.db.fetchrow(_KEYS_STATE_SQL, subjects)
        assert keys is not None
        live, erased_at = int(keys["live"]), keys["last_destroyed"]
        pending = [
            r["stream_id"] for r in await self.db.fetch(_PENDING_SQL, streams, sorted(PERSONAL_EVENT_TYPES))
        ]
        erasures = [
            {
                "erasure_id": str(r["erasure_id"]),
                "requested_by": r["requested_by"],
                "basis": r["basis"],
                "requested_at": r["requested_at"].isoformat(),
                "orders": [order_id_of(s) or s for s in r["streams"]],
            }
            for r in await self.db.fetch(_ERASURES_SQL, label, streams)
        ]
        at = None if erased_at is None else erased_at.isoformat()
        sealed = _status(erased_at, live)
        places: list[dict[str, Any]] = [
            {
                "place": "event_store",
                "status": "pending" if pending and erased_at is not None else sealed,
                "erased_at": at,
                "detail": f"{int(keys['destroyed'])} key(s) destroyed, {live} live;"
                f" {len(streams) - len(pending)} of {len(streams)} order(s) end with PersonalDataErased",
            },
            {
                "place": "read_model:order_state",
                "status": sealed,
                "erased_at": at,
                "detail": "rows hold the sealed form; reads open it with the subject's key",
            },
            {
                "place": "read_model:transactions",
                "status": "no_personal_data",
                "erased_at": None,
                "detail": "",
            },
            {
                "place": "kafka:orders.events",
                "status": sealed,
                "erased_at": at,
                "detail": "messages carry the sealed form only (envelope encryption)",
            },
            self._intake_horizon(erased_at),
        ]
        for place in self.places:
            places.extend(await place(streams, erased_at))
        return {
            "subject": label,
            "subjects": subjects,
            "orders": [order_id_of(s) or s for s in streams],
            "erasures": erasures,
            "places": places,
        }

    def _intake_horizon(self, erased_at: datetime | None) -> dict[str, Any]:
        hours = self.intake_retention_hours
        place: dict[str, Any] = {"place": "kafka:orders.intake", "erased_at": None}
        if erased_at is None:
            return {**place, "status": "not_erased", "detail": "commands as producers sent them"}
        if hours is None:
            return {
                **place,
                "status": "unknown",
                "detail": "set privacy.kafka_retention_hours (the topic's retention)",
            }
        horizon = erased_at + timedelta(hours=hours)
        done = self.clock() >= horizon
        return {
            **place,
            "status": "erased" if done else "pending",
            "erased_at": horizon.isoformat() if done else None,
            "detail": f"plain-text commands age out by {horizon.isoformat()} (retention {hours} h)",
        }


_KEYS_STATE_SQL = """
SELECT count(*) FILTER (WHERE destroyed_at IS NULL) AS live,
       count(*) FILTER (WHERE destroyed_at IS NOT NULL) AS destroyed,
       max(destroyed_at) AS last_destroyed
  FROM privacy_keys WHERE subject = ANY($1::text[])
"""
_ERASURES_SQL = """
SELECT erasure_id, requested_by, basis, requested_at, streams FROM privacy_erasures
 WHERE subject = $1 OR streams && $2::text[] ORDER BY requested_at
"""

#: Where personal data lives besides the event store, and how an erasure reaches it; the
#: composition root adds the destinations (`PrivacyService.places`).
ReportPlace = Callable[[Sequence[str], "datetime | None"], Awaitable[list[dict[str, Any]]]]


def _status(erased_at: datetime | None, live: int) -> str:
    if live:
        return "pending"
    return "erased" if erased_at is not None else "not_erased"


def _personal_part(data: dict[str, Any]) -> dict[str, Any]:
    details = data.get("details") or {}
    return {
        "customer": details.get("customer"),
        "billing_address": details.get("billing_address"),
        "shipping_address": details.get("shipping_address"),
        "note": details.get("note"),
    }

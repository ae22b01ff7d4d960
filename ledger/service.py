"""Command handling shared by the HTTP API and the Kafka intake: load, decide, append.

One `OrderService.handle` call turns a validated command into events and a `CommandResult`:
what the command did (`Change`), the order after it, its version, whether it was a replay.
The adapters (`ledger.api`, `ledger.intake`) turn that into their answer (HTTP status and
headers; the intake's ack); the service knows no HTTP.

1. With an idempotency key: return the stored answer if the key was already answered
   (`IdempotencyMismatch` if the request differs), else claim the key as in flight
   (`IdempotencyInProgress` for a concurrent duplicate).
2. Load the stream, fold it, check `expected_version` (If-Match), `decide`.
3. Render the order document (`order_document`: the order view after the events) *before*
   appending, so it is stored with the events in the same transaction and replayed verbatim
   to retries: a retry gets the bytes the first request got, even if the view's code changed
   in between. The same bytes are measured against the events topic's message limit.
4. Append with the version the decision was based on. Event ids are derived from the
   idempotency key, so even a retry that slips past the key check dedupes at the event level.

Without If-Match a lost race is retried transparently (the client asked for no particular
version); with If-Match it is the client's `VersionConflict`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import orjson
from pydantic import BaseModel

from ledger.domain.commands import PlaceOrder
from ledger.domain.decide import decide
from ledger.domain.errors import DomainError
from ledger.domain.events import OrderEvent, event_data
from ledger.domain.state import Order, evolve
from ledger.domain.views import JSON_MONEY, order_to_json
from ledger.repository import load
from ledger.store import (
    ConcurrencyConflict,
    EventStoreProtocol,
    ExternalIdTaken,
    IdempotencyKeyReused,
    IdempotencyRequest,
    NewEvent,
)
from ledger_kernel.wire.codec import dumps
from ledger_kernel.wire.streams import order_id_of, stream_id_of

__all__ = [
    "Actor",
    "Change",
    "CommandResult",
    "DuplicateExternalId",
    "IdempotencyInProgress",
    "IdempotencyMismatch",
    "OrderGone",
    "OrderNotFound",
    "OrderService",
    "RequestMeta",
    "ServiceError",
    "VersionConflict",
    "order_document",
    "order_view",
]

_NS = uuid5(NAMESPACE_URL, "urn:order-ledger:commands")
_CLAIM_STALE_S = 60.0
_RACE_RETRIES = 5
#: A relay message besides the event's data and the order view: ids, type, metadata (actor,
#: request ids, idempotency key), timestamps, headers. A generous bound.
_ENVELOPE_OVERHEAD = 4096


@dataclass(frozen=True, slots=True)
class Actor:
    """Who issued a command: `name` is recorded as the events' actor, `client_id` scopes keys."""

    name: str
    client_id: str


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """Where a command came from, recorded in every event's metadata."""

    source: str
    request_id: str
    route: str
    correlation_id: str | None = None
    causation_id: str | None = None


class Change(StrEnum):
    """What a command did to its order (HTTP answers 201 for `CREATED`, 200 otherwise)."""

    #: It created something: an order, a payment, a shipment.
    CREATED = "created"
    #: It appended events that change the order.
    UPDATED = "updated"
    #: The order already was what the command asks (e.g. a PUT of what is there): nothing appended.
    UNCHANGED = "unchanged"


#: The stored answer names the change by the HTTP status it had: answers stored before the
#: service returned `Change` are in the same table and must replay the same.
_STORED_STATUS = {Change.CREATED: 201, Change.UPDATED: 200, Change.UNCHANGED: 200}


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A command's answer: what it did, the order after it (at `version`) and its document.

    `document` is `order_document(order)`, rendered once by the service because it is stored
    with an idempotency key: a replay (`replayed`: an earlier request with the same key was
    answered) carries the stored bytes and no `order`. `appended` counts the events this call
    appended (0 for a replay or an unchanged order).
    """

    change: Change
    order_id: UUID
    version: int
    document: bytes
    order: Order | None = None
    replayed: bool = False
    appended: int = 0

    def to_stored(self) -> dict[str, Any]:
        """The JSON-able form stored with the idempotency key."""
        return {
            "status": _STORED_STATUS[self.change],
            "body": self.document.decode(),
            "order_id": str(self.order_id),
            "version": self.version,
        }

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any]) -> CommandResult:
        """Rebuild a stored answer (for a replay): the same change, version and bytes."""
        return cls(
            change=Change.CREATED if int(stored["status"]) == 201 else Change.UPDATED,
            order_id=UUID(str(stored["order_id"])),
            version=int(stored["version"]),
            document=str(stored["body"]).encode(),
            replayed=True,
        )


class ServiceError(Exception):
    """Base of the service's own refusals (domain errors stay `DomainError`)."""


class OrderNotFound(ServiceError):
    def __init__(self, order_id: UUID) -> None:
        super().__init__(f"order {order_id} does not exist")
        self.order_id = order_id


class OrderGone(ServiceError):
    """The order was deleted (its stream ends in the `OrderDeleted` event): HTTP 410."""

    def __init__(self, order_id: UUID, version: int) -> None:
        super().__init__(f"order {order_id} was deleted")
        self.order_id = order_id
        self.version = version


class VersionConflict(ServiceError):
    def __init__(self, order_id: UUID, expected: int, current: int) -> None:
        super().__init__(f"order {order_id} is at version {current}, not {expected}")
        self.order_id = order_id
        self.expected = expected
        self.current_version = current


class DuplicateExternalId(ServiceError):
    def __init__(self, external_id: str, existing_order_id: str) -> None:
        super().__init__(f"external_id {external_id!r} already belongs to order {existing_order_id}")
        self.external_id = external_id
        self.existing_order_id = existing_order_id


class OrderTooLarge(ServiceError):
    """The order after this command would not fit in one message of the events topic.

    The relay publishes each event with the whole order view; a message over the producer's
    (and the broker's) limit could never be published, and the relay would hold every order
    behind it. Refused at the write, while the producer can still be told.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the order would be about {size} bytes on the events topic; the limit is {limit}"
            " (fewer or shorter lines, or a larger kafka.max_batch_size on producer and broker)"
        )
        self.size = size
        self.limit = limit


class IdempotencyMismatch(ServiceError):
    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for a different request")
        self.key = key


class IdempotencyInProgress(ServiceError):
    def __init__(self, key: str) -> None:
        super().__init__(f"a request with idempotency key {key!r} is still in progress; retry later")
        self.key = key


def fingerprint(command: BaseModel, route: str, order_id: UUID | None) -> str:
    """sha256 over the canonical command, its route and target order: what "same request" means."""
    canonical = orjson.dumps(
        {
            "route": route,
            "order_id": str(order_id) if order_id else None,
            "command": type(command).__name__,
            "body": command.model_dump(mode="json", exclude_unset=True),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def order_view(state: Order) -> dict[str, Any]:
    """The API's JSON view of an order (money pre-serialized for the kernel's `dumps`)."""
    return order_to_json(state, money=JSON_MONEY)


def order_document(state: Order) -> bytes:
    """The order as the API and the stored idempotent answers carry it: `{"data": <view>}`."""
    return dumps({"data": order_view(state)})


@dataclass
class OrderService:
    """Runs commands against the event store; the same object serves HTTP and Kafka."""

    store: EventStoreProtocol
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    id_factory: Callable[[], UUID] = field(default=uuid4)
    #: Largest relay message (`kafka.max_batch_size`: the producer's record limit).
    max_message_bytes: int = 1024 * 1024
    #: With personal data sealed on append (`ledger.privacy`): at most how many bytes sealing
    #: adds to an event's data or an order view (`ledger.privacy.fields.sealed_growth`), so the
    #: size check measures what the relay will publish.
    sealed_growth: Callable[[Mapping[str, Any]], int] | None = None

    # -- reads -----------------------------------------------------------------------------

    async def load(
        self, order_id: UUID, *, to_version: int | None = None, as_of: datetime | None = None
    ) -> Order | None:
        """The folded order (optionally as of a version or a time), or None if it has no events."""
        return await load(self.store, order_id, to_version=to_version, as_of=as_of)

    # -- writes ----------------------------------------------------------------------------

    async def handle(
        self,
        command: BaseModel,
        *,
        order_id: UUID | None,
        expected_version: int | None,
        actor: Actor,
        idempotency_key: str | None,
        meta: RequestMeta,
    ) -> CommandResult:
        """Decide and append one command; see the module docstring for the steps."""
        if idempotency_key is None:  # the fingerprint only serves idempotency keys: skip it
            return await self._run(
                command=command,
                order_id=order_id,
                expected_version=expected_version,
                actor=actor,
                key=None,
                fp="",
                meta=meta,
            )
        fp = fingerprint(command, meta.route, order_id)
        claim = uuid4()
        answer = await self.store.claim_idempotency(actor.client_id, idempotency_key, claim, _CLAIM_STALE_S)
        if answer.outcome is not None:
            if answer.fingerprint != fp:
                raise IdempotencyMismatch(idempotency_key)
            return CommandResult.from_stored(answer.outcome)
        if not answer.claimed:
            raise IdempotencyInProgress(idempotency_key)
        try:
            return await self._run(
                command=command,
                order_id=order_id,
                expected_version=expected_version,
                actor=actor,
                key=idempotency_key,
                fp=fp,
                meta=meta,
            )
        finally:
            await self.store.release_idempotency(actor.client_id, idempotency_key, claim)

    async def _run(
        self,
        *,
        command: BaseModel,
        order_id: UUID | None,
        expected_version: int | None,
        actor: Actor,
        key: str | None,
        fp: str,
        meta: RequestMeta,
    ) -> CommandResult:
        placing = isinstance(command, PlaceOrder)
        if placing:
            order_id = uuid5(_NS, f"order\n{actor.client_id}\n{key}") if key else self.id_factory()
            if command.source is None:  # type: ignore[attr-defined]
                command = command.model_copy(update={"source": actor.client_id})
        assert order_id is not None
        for _ in range(_RACE_RETRIES):
            try:
                return await self._attempt(
                    command=command,
                    order_id=order_id,
                    expected_version=expected_version,
                    actor=actor,
                    key=key,
                    fp=fp,
                    meta=meta,
                )
            except ConcurrencyConflict as exc:
                if expected_version is not None or placing:
                    raise VersionConflict(order_id, expected_version or 0, exc.current_version) from None
        raise VersionConflict(
            order_id, expected_version or 0, await self.store.stream_version(stream_id_of(order_id))
        )

    async def _attempt(
        self,
        *,
        command: BaseModel,
        order_id: UUID,
        expected_version: int | None,
        actor: Actor,
        key: str | None,
        fp: str,
        meta: RequestMeta,
    ) -> CommandResult:
        stream = stream_id_of(order_id)
        # A fresh random id (no key) names no stream yet: skip the read (one round trip less).
        fresh = isinstance(command, PlaceOrder) and key is None
        state = None if fresh else await self.load(order_id)
        current = state.version if state is not None else 0
        if expected_version is not None and expected_version != current:
            raise VersionConflict(order_id, expected_version, current)
        if state is None and not isinstance(command, PlaceOrder):
            raise OrderNotFound(order_id)
        if state is not None and state.deleted:
            raise OrderGone(order_id, current)
        now = self.clock()
        events = decide(command, state, now=now, ids=lambda: order_id)  # type: ignore[arg-type]
        if not events:  # a no-op (e.g. PUT of what is already there): nothing to append
            assert state is not None
            return CommandResult(Change.UNCHANGED, order_id, current, order_document(state), state)
        if isinstance(command, PlaceOrder) and not fresh:
            await self._check_external_id(events[0], stream)
        new_state = state
        for i, event in enumerate(events, start=1):
            new_state = evolve(new_state, event, version=current + i, recorded_at=now)
        assert new_state is not None
        change = Change.CREATED if type(command).__name__ in _CREATES else Change.UPDATED
        result = CommandResult(
            change, order_id, new_state.version, order_document(new_state), new_state, appended=len(events)
        )
        self._check_message_size(result.document, events)
        metadata = {
            "actor": actor.name,
            "client_id": actor.client_id,
            "source": meta.source,
            "correlation_id": meta.correlation_id or meta.request_id,
            "causation_id": meta.causation_id or meta.request_id,
            "idempotency_key": key,
            "request_id": meta.request_id,
        }
        new_events = [
            NewEvent(
                type=event.type,
                data=event_data(event),
                metadata=metadata,
                event_id=uuid5(_NS, f"{actor.client_id}\n{key}\n{fp}\n{i}") if key else self.id_factory(),
                schema_version=event.schema_version,
            )
            for i, event in enumerate(events)
        ]
        idem = IdempotencyRequest(actor.client_id, key, fp, result.to_stored()) if key else None
        try:
            written = await self.store.append(stream, new_events, current, idempotency=idem)
        except IdempotencyKeyReused:
            raise IdempotencyMismatch(key or "") from None
        except ExternalIdTaken as exc:
            existing = exc.existing_stream_id
            raise DuplicateExternalId(
                str(getattr(events[0], "external_id", "")), order_id_of(existing) or existing
            ) from None
        if written.replayed:  # the same key's events were appended meanwhile: answer as they were
            if written.outcome is not None:
                return CommandResult.from_stored(written.outcome)
            return CommandResult(change, order_id, written.version, result.document, replayed=True)
        return result

    def _check_message_size(self, document: bytes, events: Sequence[OrderEvent]) -> None:
        """Refuse an order whose relay messages could not be published (`OrderTooLarge`).

        A message is about the order view (the order document, already serialized) plus the
        event's data, both as stored: with `sealed_growth` set (personal data sealed), each
        plain size plus the most sealing can add to it. The data is measured only near the
        limit, so a usual write pays nothing.
        """
        limit = self.max_message_bytes
        view_bytes = len(document)
        growth = self.sealed_growth
        # Sealing at most adds a third of a document plus a fixed part per personal field
        # (docs/privacy.md#costs): a quarter of the limit leaves room for both documents.
        if view_bytes + _ENVELOPE_OVERHEAD <= limit // (2 if growth is None else 4):
            return  # an event is never larger than the order view it produced, give or take
        datas = [event_data(event) for event in events]
        largest = max(len(dumps(data)) + (0 if growth is None else growth(data)) for data in datas)
        if growth is not None:
            view_bytes += growth(orjson.loads(document)["data"])
        size = view_bytes + largest + _ENVELOPE_OVERHEAD
        if size > limit:
            raise OrderTooLarge(size, limit)

    async def _check_external_id(self, placed: Any, stream: str) -> None:
        """Early answer to a reused external id, for placements under an idempotency key.

        The store enforces the rule in the append itself (migration 0021's trigger raises
        `ExternalIdTaken`, answered the same way), so a fresh placement (random id, no key)
        skips this lookup: on PostgreSQL it cost a pool round trip plus the pool's reset, about
        a fifth of a place-order's CPU (docs/performance.md#api).
        """
        external = getattr(placed, "external_id", None)
        if not external:
            return
        existing = await self.store.external_id_owner(placed.source or "", external)
        if existing is not None and existing != stream:
            raise DuplicateExternalId(external, order_id_of(str(existing)) or str(existing))


_CREATES = frozenset({"PlaceOrder", "RecordPayment", "DispatchShipment"})

__all__ += ["DomainError"]

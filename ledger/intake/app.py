"""Kafka command intake: `orders.intake` -> `OrderService` (the same one the HTTP API runs).

Delivery rules:
- Offsets are committed by hand (`AckPolicy.MANUAL`), only after the outcome is recorded: the
  events appended (or found already appended: idempotency replay), or the rejection published
  on `orders.intake.rejected` and acknowledged by the broker.
- A command the ledger refuses (bad JSON, schema, domain rule, version conflict, duplicate
  external id, key reuse) is rejected with the reason and the original message; never dropped.
- An infrastructure failure (database down, broker refusing the rejection) commits nothing:
  the consumer seeks back to the message and backs off, so it is processed again later.
- Redelivery is harmless: the idempotency key (envelope field, else the `idempotency-key`
  header, else topic:partition:offset) makes the second run a replay that appends nothing.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.specification import AsyncAPI
from pydantic import BaseModel, TypeAdapter, ValidationError

from ledger.api.app import event_registry, to_problem
from ledger.api.problems import Problem, field_errors
from ledger.domain.errors import DomainError
from ledger.intake.schemas import COMMANDS, ROUTES, IntakeEnvelope, RejectedCommand
from ledger.privacy.fields import sealed_growth
from ledger.privacy.setup import pg_codec
from ledger.relay.publisher import ensure_topic
from ledger.relay.topics import forbid_topic_auto_creation
from ledger.service import Actor, IdempotencyInProgress, OrderService, RequestMeta, ServiceError
from ledger.store import EventStore, StoreError, create_pool
from ledger_kernel.observability import get_logger
from ledger_kernel.observability.metrics import Metrics
from ledger_kernel.settings import Settings
from ledger_kernel.wire.codec import BodyError, dumps, parse_json
from ledger_kernel.wire.envelope import EventEnvelope

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    """What the handler needs from a Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("utf-8", "replace")
        return None


def _text_or_b64(raw: bytes | None) -> tuple[str | None, bool]:
    if raw is None:
        return None, False
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), True


def rejection(record: Received, problem: Problem) -> dict[str, Any]:
    """The `RejectedCommand` body for a refused record."""
    key, key_b64 = _text_or_b64(record.key)
    value, value_b64 = _text_or_b64(record.value)
    return {
        "problem": problem.to_dict(f"kafka://{record.topic}/{record.partition}/{record.offset}"),
        "original": {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": key,
            "key_base64": key_b64,
            "value": value,
            "value_base64": value_b64,
            "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers},
        },
        "rejected_at": datetime.now(UTC).isoformat(),
    }


#: The envelope's `idempotency_key` rule, for the `idempotency-key` header fallback.
_KEY_RULE: TypeAdapter[str] = TypeAdapter(
    Annotated[str, *IntakeEnvelope.model_fields["idempotency_key"].metadata]
)
#: Database errors about the data itself (SQLSTATE 22: NUL in text, bad encoding, out of range;
#: 54: a value too large to index): the same record fails the same way on every retry, so a
#: retry would block its partition for good.
_NEVER_STORABLE = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)


def _header_key(record: Received) -> str | None:
    """The `idempotency-key` header, held to the envelope field's rule (a `Problem` if broken).

    Unchecked, a NUL byte reached PostgreSQL, whose refusal looked transient: retried forever.
    """
    key = record.header("idempotency-key")
    if not key:
        return None
    try:
        return _KEY_RULE.validate_python(key)
    except ValidationError as exc:
        raise Problem(
            422,
            "validation-error",
            "the idempotency-key header breaks the idempotency_key rule",
            errors=field_errors(exc.errors(), prefix=("headers", "idempotency-key")),
        ) from None


#: Tries at a record that fails with an unforeseen error before it goes to the rejected topic.
UNEXPECTED_ATTEMPTS = 3


class Retry(Exception):
    """Transient: leave the offset uncommitted and process the record again after a pause."""


async def decide_record(service: OrderService, record: Received, max_lines: int) -> str:
    """Run one record through the service; returns `applied` or `replayed`.

    Raises `Problem` for a refusal (the caller rejects it) and `Retry` for transient failures.
    """
    try:
        envelope = IntakeEnvelope.model_validate(parse_json(record.value))
    except BodyError as exc:
        raise Problem(
            exc.status, "malformed-json" if exc.status == 400 else "validation-error", exc.reason
        ) from None
    except ValidationError as exc:
        raise Problem(
            422,
            "validation-error",
            "the envelope does not match IntakeEnvelope",
            errors=field_errors(exc.errors(), prefix=()),
        ) from None
    model = COMMANDS[envelope.command]
    if envelope.command != "place_order" and envelope.order_id is None:
        raise Problem(
            422,
            "validation-error",
            f"{envelope.command} needs order_id",
            errors=[{"loc": ["order_id"], "msg": "required", "type": "missing"}],
        )
    try:
        command: BaseModel = model.model_validate(envelope.body, context={"max_lines": max_lines})
    except ValidationError as exc:
        raise Problem(
            422,
            "validation-error",
            f"body does not match {model.__name__}",
            errors=field_errors(exc.errors()),
        ) from None
    client = envelope.client_id or "kafka"
    key = (
        envelope.idempotency_key
        or _header_key(record)
        or (f"kafka:{record.topic}:{record.partition}:{record.offset}")
    )
    request_id = record.header("request-id") or f"{record.topic}:{record.partition}:{record.offset}"
    try:
        result = await service.handle(
            command,
            order_id=None if envelope.command == "place_order" else envelope.order_id,
            expected_version=envelope.expected_version,
            actor=Actor(name=f"kafka:{client}", client_id=client),
            idempotency_key=key,
            meta=RequestMeta(
                source="kafka",
                request_id=request_id,
                route=ROUTES[envelope.command],
                correlation_id=record.header("correlation-id"),
                causation_id=record.header("causation-id"),
            ),
        )
    except IdempotencyInProgress:
        raise Retry("the same key is being handled elsewhere") from None
    except _NEVER_STORABLE as exc:
        raise Problem(422, "validation-error", f"the database refused the command's data: {exc}") from None
    except (DomainError, ServiceError, StoreError) as exc:
        problem = to_problem(exc)
        if problem is None or problem.status >= 500:
            raise Retry(str(exc)) from exc
        raise problem from None
    return "replayed" if result.replayed else "applied"


class Intake:
    """The intake process: a FastStream app with one manual-ack subscriber and a rejected publisher."""

    def __init__(
        self,
        settings: Settings,
        *,
        service: OrderService | None = None,
        metrics: Metrics | None = None,
        backoff_s: Callable[[int], float] | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.metrics = metrics or Metrics()
        self._backoff = backoff_s or (lambda attempt: min(0.2 * 2**attempt, 10.0))
        self._failures = 0
        self._unexpected: tuple[tuple[str, int, int], int] | None = None
        self._pool: asyncpg.Pool | None = None
        self.on_outcome: Callable[[Received, str], Awaitable[None]] | None = None
        kafka = settings.kafka
        # Its metadata requests must not create topics (the events topic above all: see
        # `ledger.relay.topics`); the intake creates its own two topics explicitly at start-up.
        forbid_topic_auto_creation()
        self.broker = KafkaBroker(settings.bootstrap_server_list, request_timeout_ms=kafka.request_timeout_ms)
        self.rejected = self.broker.publisher(
            kafka.rejected_topic,
            title="orders.intake.rejected",
            description="Commands the ledger refused, with the reason and the original message.",
            schema=RejectedCommand,
        )
        self.events_doc = self.broker.publisher(
            kafka.events_topic,
            title="orders.events",
            description="Every appended event with the order's state after it (published by `ledger relay`).",
            schema=EventEnvelope,
        )
        self.subscriber = self.broker.subscriber(
            kafka.intake_topic,
            group_id=kafka.intake_group,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            # Records of a producer's aborted transaction are never commands; on a topic without
            # transactions this reads exactly what read_uncommitted would.
            isolation_level="read_committed",
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            title="orders.intake",
            description="Order commands (IntakeEnvelope); same bodies as the HTTP API.",
        )
        self.subscriber(self._on_message)
        self.app = FastStream(
            self.broker,
            specification=AsyncAPI(
                title="order-ledger Kafka interface",
                version="1.0.0",
                description="Command intake, rejections, and the order event stream.",
            ),
            on_startup=[self._startup],
            on_shutdown=[self._shutdown],
        )

    async def _startup(self) -> None:
        kafka = self.settings.kafka
        for topic in (kafka.intake_topic, kafka.rejected_topic):
            # The intake owns these: created with explicit partitions, never by a metadata request.
            await ensure_topic(
                self.settings.bootstrap_servers,
                topic,
                kafka.partitions,
                kafka.request_timeout_ms,
                check_partitions=False,
            )
        if self.service is None:
            self._pool = await create_pool(
                self.settings.database_url, self.settings.store, application_name="ledger-intake"
            )
            store = EventStore(
                self._pool,
                event_registry(),
                self.settings.store,
                observe=self.metrics.observe_append,
                codec=pg_codec(self._pool, self.settings.privacy),
            )
            self.service = OrderService(
                store,
                max_message_bytes=self.settings.kafka.max_batch_size,
                sealed_growth=sealed_growth if store.codec is not None else None,
            )

    async def _shutdown(self) -> None:
        if self._pool is not None:  # only what _startup created
            if self.service is not None:
                await self.service.store.aclose()
            await self._pool.close()

    async def start(self) -> None:
        """Start without the FastStream runner (tests, embedding in `ledger dev`)."""
        await self._startup()
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
        await self._shutdown()

    async def _on_message(self, message: KafkaMessage) -> None:
        raw = message.raw_message
        assert not isinstance(raw, tuple)
        record = Received(
            raw.topic, raw.partition, raw.offset, raw.key, raw.value or b"", tuple(raw.headers or ())
        )
        assert self.service is not None
        try:
            outcome = await decide_record(self.service, record, self.settings.api.max_lines)
        except Problem as problem:
            if not await self._reject(message, record, problem):
                return
            outcome = "rejected"
        except (Retry, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._retry(message, record, repr(exc))
            return
        except Exception as exc:
            # A bug, not the record's fault as far as we know. Unhandled, the handler would
            # neither ack nor nack and the next ack would commit past the record: lost. Retried
            # forever, it would block the partition. A few tries, then the rejected topic
            # (which keeps the record whole, for a resend after the fix).
            if self._unexpected_attempt(record) < UNEXPECTED_ATTEMPTS:
                log.exception("intake failed unexpectedly; will retry", offset=record.offset)
                await self._retry(message, record, repr(exc))
                return
            log.exception("intake failed unexpectedly; rejecting", offset=record.offset)
            internal = Problem(
                500,
                "internal-error",
                f"the ledger failed on this record ({type(exc).__name__}); it was logged",
            )
            if not await self._reject(message, record, internal):
                return
            outcome = "rejected"
        self._failures = 0
        self._unexpected = None
        if self.on_outcome is not None:
            await self.on_outcome(record, outcome)
        await message.ack()
        self.metrics.intake_commands.labels(outcome).inc()

    async def _reject(self, message: KafkaMessage, record: Received, problem: Problem) -> bool:
        """Publish the record and its problem to the rejected topic; False (retry scheduled) if
        that publish failed, so the record is never committed unrecorded."""
        try:
            await self.rejected.publish(
                dumps(rejection(record, problem)),
                key=record.key,
                headers={"content-type": "application/json", "problem-type": problem.to_dict()["type"]},
            )
        except Exception as exc:
            await self._retry(message, record, f"rejected publish failed: {exc!r}")
            return False
        log.info("intake rejected", offset=record.offset, problem=problem.slug, detail=problem.detail)
        return True

    def _unexpected_attempt(self, record: Received) -> int:
        """How many times this record has now failed unexpectedly (records come back in order:
        one counter, for the record at the head of the partition)."""
        where = (record.topic, record.partition, record.offset)
        count = self._unexpected[1] + 1 if self._unexpected and self._unexpected[0] == where else 1
        self._unexpected = (where, count)
        return count

    async def _retry(self, message: KafkaMessage, record: Received, reason: str) -> None:
        delay = self._backoff(self._failures)
        self._failures += 1
        self.metrics.intake_commands.labels("retry").inc()
        log.warning("intake will retry", offset=record.offset, reason=reason, delay_s=delay)
        await message.nack()
        await asyncio.sleep(delay)


def asyncapi_document(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI document of the Kafka interface, generated from the FastStream app.

    FastStream derives a subscriber's payload from the handler's body parameter; ours takes the
    raw message (to reject undecodable input itself), so the intake payload is set to
    `IntakeEnvelope`'s schema here.
    """
    intake = Intake(settings or Settings())
    doc: dict[str, Any] = intake.app.schema.to_specification().to_jsonable()
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    envelope = IntakeEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in envelope.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas["IntakeEnvelope"] = envelope
    for name, message in doc.get("components", {}).get("messages", {}).items():
        if name.startswith("orders.intake:") and "rejected" not in name:
            message["payload"] = {"$ref": "#/components/schemas/IntakeEnvelope"}
            message["title"] = "IntakeEnvelope"
    return doc

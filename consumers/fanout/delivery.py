"""Deliver one order's pending events to one destination: inbox, parking, retries, crash safety.

Order of effects (F10): map -> for each call: [intent saved] -> HTTP with retries -> state saved
-> finally inbox rows + delivery state in one transaction -> (caller) Kafka offset commit.
A crash anywhere re-delivers the events; what already happened is recognised:
- idempotent calls (Omneo update-create by external_id, PUT/PATCH/DELETE of a snapshot) are
  repeated harmlessly, and the `sent` digests usually skip them altogether;
- Omneo order create has no upsert: the intent ('creating') is committed BEFORE the POST, and
  a 'creating' row or an ambiguous answer (timeout, 5xx) is reconciled by looking the order up
  by external_id before any second POST; if the lookup cannot answer, the order is parked;
- Omnisend v3 create: a duplicate POST answers "already exists" and becomes a PUT;
- Omnisend live events are not deduplicated by the vendor: their intent is saved first and an
  event whose outcome is unknown is never re-sent (at most once: a missed email beats a
  duplicate one; it is logged and counted as `unknown`).
Permanent failures park the order (this event and every later one, in order); 401/403 raise
`Halted` so the worker stops without committing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from consumers.fanout.applicability import NotApplicable
from consumers.fanout.batching import (
    BATCH_MARK,
    BATCHED_KINDS,
    Retrying,
    batch_settings,
    send_order_batches,
    wait_for_batch,
)
from consumers.fanout.budget import Budget, Closing, RateBudget, call_with_retries
from consumers.fanout.delivery_store import Conn, DeliveryRow, FanoutStore
from consumers.fanout.destinations import Destination, OmneoDestination, OmnisendDestination
from consumers.fanout.mapping_types import DestinationCall, Envelope, EnvelopeError
from consumers.http import AuthFailure, Outcome, Permanent, Retryable, Success
from ledger_kernel.observability import Metrics, get_logger
from ledger_kernel.settings import DestinationSettings

__all__ = ["Deliverer", "Halted", "Item"]

log = get_logger(__name__)


class Halted(Exception):
    """The destination refused our credentials (401/403): stop the integration, commit nothing."""

    def __init__(self, outcome: AuthFailure) -> None:
        super().__init__(f"destination answered {outcome.status}")
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class Item:
    """One event to deliver: the raw envelope (kept for the park queue) and its parse."""

    event_id: str
    version: int
    position: int
    raw: bytes
    env: Envelope | None
    error: str | None = None

    @classmethod
    def from_raw(cls, raw: bytes, *, fallback_id: str) -> Item:
        try:
            env = Envelope.from_bytes(raw)
        except EnvelopeError as exc:
            return cls(fallback_id, 0, 0, raw, None, str(exc))
        return cls(env.event_id, env.version, env.position, raw, env)


@dataclass(frozen=True, slots=True)
class _Park:
    reason: str
    detail: Any = None


def _items(envs: Sequence[Envelope]) -> list[Item]:
    return [Item(e.event_id, e.version, e.position, e.to_bytes(), e) for e in envs]


def _maybe_accepted(outcome: Outcome) -> bool:
    """A 2xx, or an answer after which the vendor may have applied the call (timeout, 500...)."""
    return isinstance(outcome, Success) or (isinstance(outcome, Retryable) and outcome.ambiguous)


class Deliverer:
    """One destination's delivery logic, shared by the worker, `redrive` and `replay`."""

    def __init__(
        self,
        destination: Destination,
        store: FanoutStore,
        settings: DestinationSettings,
        metrics: Metrics,
        *,
        budget: Budget | None = None,
        closing: asyncio.Event | None = None,
        after_success: Callable[[], None] | None = None,
        open_envelope: Callable[[Envelope], Awaitable[Envelope]] | None = None,
    ) -> None:
        self.destination = destination
        #: Opens sealed personal fields before mapping (`consumers.fanout.privacy`); None: as read.
        self.open_envelope = open_envelope
        self.name = destination.name
        self.store = store
        self.settings = settings
        self.metrics = metrics
        # Processes pass the shared (Postgres) budget; the in-process one is for tests only.
        self.budget: Budget = budget or RateBudget(settings.rate_per_minute)
        self.closing = closing or asyncio.Event()
        self._after_success = after_success
        self.metrics_calls = 0
        """Outbound calls made by this deliverer (every attempt), for summaries."""
        self._settled: dict[str, Outcome] = {}
        """Batch item answers by order id, each used once as its order's first try (`handle_many`)."""
        self._ended_batches: set[str] = set()
        """Batches known to have ended: their marks on orders can go (`_after_batches`)."""
        self._batch_deadlines: dict[str, float] = {}
        """Until when a marked batch is waited for (once per batch, not per order)."""

    # -- entry points -------------------------------------------------------------------------
    async def handle(self, order_id: str, items: Sequence[Item]) -> None:
        """Events of one order from the log, oldest first (the worker's path)."""
        async with self.store.order_lock(order_id) as conn:
            await self._handle_locked(conn, order_id, items)

    @property
    def batches(self) -> bool:
        """True when this destination can carry many orders' writes in one call (Omnisend v3)."""
        return (
            isinstance(self.destination, OmnisendDestination)
            and self.destination.options.mode == "orders"
            and self.settings.batch_size > 1
        )

    async def handle_many(self, groups: Sequence[tuple[str, Sequence[Item]]]) -> None:
        """`handle` for many orders at once (a backlog): their order writes go in batches.

        Three steps under every order's lock: plan (what each order would send; categories
        first), one batch call per `batch_size` orders, then each order's normal delivery, in
        which its call's first answer is its batch item's answer (docs/connectors.md#omnisend-batches).
        """
        async with self.store.orders_lock([o for o, _ in groups]) as conn:
            planned: dict[str, tuple[DestinationCall, int]] = {}
            for order_id, items in groups:
                plan = await self._plan_handle(conn, order_id, items)
                if plan is not None:
                    call = await self._batchable(conn, *plan)
                    if call is not None:
                        planned[order_id] = (call, plan[1][-1].version)
            await self._send_batches(conn, planned)
            try:
                for order_id, items in groups:
                    await self._handle_locked(conn, order_id, items)
            finally:
                self._settled.clear()

    async def _handle_locked(self, conn: Conn, order_id: str, items: Sequence[Item]) -> None:
        row, seen, parked = await self.store.snapshot(conn, order_id, [i.event_id for i in items])
        fresh: list[Item] = []
        for item in items:
            if item.event_id not in seen:
                seen.add(item.event_id)
                fresh.append(item)
        if not fresh:
            return
        if parked:
            await self._park(conn, order_id, fresh, "waiting behind parked order", queued=True)
            return
        stale = [i for i in fresh if i.env is not None and i.version <= row.last_version]
        if stale:
            await self.store.record(conn, row, [(i.event_id, i.version, "stale", 0) for i in stale])
        live = [i for i in fresh if i not in stale]
        split = next((n for n, i in enumerate(live) if i.env is None), len(live))
        good, rest = live[:split], live[split:]
        parked_now = False
        if good:
            self._lag(good[-1])
            parked_now = not await self._deliver_or_park(conn, row, good)
        if rest and parked_now:
            await self._park(conn, order_id, rest, "waiting behind parked event", queued=True)
        elif rest:
            await self._park(conn, order_id, rest, f"unreadable envelope: {rest[0].error}")

    async def _plan_handle(
        self, conn: Conn, order_id: str, items: Sequence[Item]
    ) -> tuple[DeliveryRow, list[Item]] | None:
        """What `_handle_locked` would deliver for this order (read-only): its row and items."""
        row, seen, parked = await self.store.snapshot(conn, order_id, [i.event_id for i in items])
        if parked:
            return None
        good: list[Item] = []
        for item in items:
            if item.env is None:
                break
            if item.event_id not in seen and item.version > row.last_version:
                seen.add(item.event_id)
                good.append(item)
        return (row, good) if good else None

    async def _batchable(self, conn: Conn, row: DeliveryRow, items: Sequence[Item]) -> DestinationCall | None:
        """The order's write if a batch can carry it, after creating the categories it names.

        None when the order sends nothing, is not applicable, needs another kind of call
        (PATCH, DELETE), or an earlier batch we gave up on may still carry it (two batches run
        in no known order): it is then delivered on its own, as always.
        """
        if any(k.startswith(BATCH_MARK) for k in row.sent):
            return None
        envs = await self._opened(items)
        try:
            if not envs or self.destination.not_applicable(envs, row) is not None:
                return None
            calls = self.destination.map(envs, row)
        except Exception:  # its own delivery meets the error again and parks the order
            return None
        if not calls or calls[-1].kind not in BATCHED_KINDS:
            return None
        for call in calls[:-1]:
            if call.kind != "omnisend.category.create":
                return None
            try:
                if await self._perform(conn, row, call) is not None:
                    return None  # its own delivery retries the category and parks if it must
            except (Halted, Closing, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                raise
            except Exception:  # as above: its own delivery parks the order with why
                return None
        return calls[-1]

    def _retrying(self) -> Retrying:
        return Retrying(self.budget, self.settings, self.closing, self._count)

    async def _send_batches(self, conn: Conn, planned: dict[str, tuple[DestinationCall, int]]) -> None:
        """Batch the planned `{orderID: (call, version it carries)}`; marks each order with its batch."""
        if len(planned) < 2 or not isinstance(self.destination, OmnisendDestination):
            return

        async def mark(batch_id: str, calls: Sequence[DestinationCall]) -> None:
            # Committed before any wait: a crash or give-up leaves the mark for the next delivery.
            await self.store.mark(conn, BATCH_MARK + batch_id, {c.key: str(planned[c.key][1]) for c in calls})

        done = await send_order_batches(
            self.destination.client,
            [call for call, _ in planned.values()],
            batch=batch_settings(self.settings),
            retrying=self._retrying(),
            on_created=mark,
        )
        self._settled.update(done.outcomes)
        self._ended_batches |= done.ended

    async def redrive(self, order_id: str, *, drop_unreadable: bool = False) -> tuple[int, str | None]:
        """Deliver a parked order's queue in order; returns (delivered, reason it stopped or None).

        An unreadable envelope can never be delivered: it stops the redrive unless the operator
        asks to drop it (`drop_unreadable`, logged), after which the order's later events flow.
        """
        async with self.store.order_lock(order_id) as conn:
            parked = await self.store.parked_events(conn, order_id)
            row = await self.store.load(conn, order_id)
            done = 0
            for p in parked:
                item = Item.from_raw(p.envelope, fallback_id=p.event_id)
                if item.env is None and not drop_unreadable:
                    return done, f"unreadable envelope: {item.error}"
                if item.env is None:
                    log.warning("dropped unreadable parked event", order_id=order_id, event_key=p.event_id)
                    await self.store.unpark(conn, [p.event_id])
                    continue
                if item.version > row.last_version:
                    ok = await self._deliver(conn, row, [item], outcome="delivered")
                    if not ok:
                        head = await self.store.parked_events(conn, order_id)
                        return done, head[0].reason if head else "parked"
                await self.store.unpark(conn, [p.event_id])
                done += 1
            await self._update_parked_gauge()
            return done, None

    async def replay(self, order_id: str, envs: Sequence[Envelope]) -> int:
        """Re-send the latest state regardless of inbox and digests (after a mapping fix)."""
        async with self.store.order_lock(order_id) as conn:
            return await self.replay_locked(conn, order_id, envs)

    async def replay_many(self, conn: Conn, work: Sequence[tuple[str, Sequence[Envelope]]]) -> int:
        """`replay_locked` for many orders whose locks `conn` holds: their writes go in batches."""
        before = self.metrics_calls
        planned: dict[str, tuple[DestinationCall, int]] = {}
        for order_id, envs in work:
            row = await self._replay_row(conn, order_id)
            call = await self._batchable(conn, row, _items(envs))
            if call is not None and envs:
                planned[order_id] = (call, envs[-1].version)
        await self._send_batches(conn, planned)
        try:
            for order_id, envs in work:
                await self.replay_locked(conn, order_id, envs)
        finally:
            self._settled.clear()
        return self.metrics_calls - before

    async def _replay_row(self, conn: Conn, order_id: str) -> DeliveryRow:
        """The delivery state a replay starts from: digests and version cleared (not the marks)."""
        row = await self.store.load(conn, order_id)
        row.sent = {k: v for k, v in row.sent.items() if k.startswith(("inflight:", "ev:", BATCH_MARK))}
        row.last_version = 0
        return row

    async def replay_locked(self, conn: Conn, order_id: str, envs: Sequence[Envelope]) -> int:
        """`replay` for a caller already holding the order lock (it read the log under it)."""
        row = await self._replay_row(conn, order_id)
        # The real envelope, not b"": a failed replay parks these and redrive must read them.
        items = _items(envs)
        before = self.metrics_calls
        if not await self._deliver(conn, row, items, outcome="replayed"):
            # Parked: keep the replay's clean slate (digests, version), so redrive re-sends it.
            await self.store.save(conn, row)
        return self.metrics_calls - before

    # -- internals ----------------------------------------------------------------------------

    async def _opened(self, items: Sequence[Item]) -> list[Envelope]:
        """The items' envelopes with their sealed personal fields opened: every call (single or
        batched) maps the opened form, never the sealed one (docs/privacy.md)."""
        envs = [i.env for i in items if i.env is not None]
        if self.open_envelope is not None:
            envs = [await self.open_envelope(env) for env in envs]
        return envs

    def _lag(self, item: Item) -> None:
        if item.env is not None:
            lag = (datetime.now(UTC) - item.env.recorded_at).total_seconds()
            self.metrics.worker_lag_seconds.labels(self.name).set(max(lag, 0.0))

    def _count(self, outcome: Outcome) -> None:
        self.metrics_calls += 1
        if isinstance(outcome, Success | Permanent | AuthFailure):
            status = str(outcome.status)
        else:
            status = str(outcome.status) if outcome.status is not None else outcome.reason
        self.metrics.outbound_calls.labels(self.name, status).inc()

    async def _deliver_or_park(self, conn: Conn, row: DeliveryRow, items: Sequence[Item]) -> bool:
        """`_deliver`, but an unforeseen error parks this order (with why) instead of failing the
        batch, which would block every order of the partition (docs/architecture.md#fanout: the others flow).
        Database trouble is not the order's fault: it still fails the batch, which is read again.
        """
        try:
            return await self._deliver(conn, row, items, outcome="delivered")
        except (Halted, Closing, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            raise
        except Exception as exc:
            log.exception("delivery failed unexpectedly", destination=self.name, order_id=row.order_id)
            await self._park(conn, row.order_id, items, f"unexpected error: {type(exc).__name__}: {exc}")
            return False

    async def _deliver(
        self,
        conn: Conn,
        row: DeliveryRow,
        items: Sequence[Item],
        *,
        outcome: str,
    ) -> bool:
        """Map and perform; True when delivered or not applicable (inbox written), False when parked."""
        envs = await self._opened(items)
        refused = self.destination.not_applicable(envs, row)
        if refused is not None:
            await self._not_applicable(conn, row, items, refused)
            return True
        if row.status == "creating" and isinstance(self.destination, OmneoDestination):
            park = await self._reconcile_create(conn, row)
            if park is not None:
                await self._park(conn, row.order_id, items, park.reason, park.detail)
                return False
        park = await self._after_batches(row, items[-1].version)
        if park is not None:
            await self._park(conn, row.order_id, items, park.reason, park.detail)
            return False
        calls = self.destination.map(envs, row)
        for call in calls:
            for note in call.notes:
                log.warning("lossy mapping", destination=self.name, order_id=row.order_id, note=note)
            for name in call.dropped:
                log.warning("field left out", destination=self.name, order_id=row.order_id, field=name)
                self.metrics.dropped_fields.labels(self.name, name).inc()
            park = await self._perform(conn, row, call)
            if park is not None:
                await self._park(conn, row.order_id, items, park.reason, park.detail)
                return False
        if row.not_applicable is not None:
            log.info("order now applicable; delivered", destination=self.name, order_id=row.order_id)
            row.not_applicable = None
        last = items[-1]
        row.last_version = max(row.last_version, last.version)
        row.last_position = max(row.last_position, last.position)
        inbox = [
            (
                i.event_id,
                i.version,
                outcome if i is last or outcome == "replayed" else "coalesced",
                len(calls) if i is last else 0,
            )
            if calls
            else (i.event_id, i.version, "noop" if outcome != "replayed" else outcome, 0)
            for i in items
        ]
        await self.store.record(conn, row, inbox)
        return True

    async def _after_batches(self, row: DeliveryRow, version: int) -> _Park | None:
        """Wait for the batches marked on this order that may still replace it with an older state.

        Omnisend runs batches asynchronously: one we stopped waiting for (timeout, unreadable
        status, shutdown, crash) may run after a later single write and put its older state
        back. So a state newer than a marked batch's goes out only once that batch has ended
        (each batch is waited for at most `batch_wait_s` per process, then the order parks
        until a redrive finds it ended); the same state may go out again at once (either run
        leaves that state). Ended marks are dropped from `row.sent`; the caller saves the row.
        """
        for key in [k for k in row.sent if k.startswith(BATCH_MARK)]:
            batch_id = key.removeprefix(BATCH_MARK)
            if batch_id not in self._ended_batches:
                if version <= int(row.sent[key]):
                    continue
                assert isinstance(self.destination, OmnisendDestination)  # only it marks orders
                deadline = self._batch_deadlines.setdefault(
                    batch_id, time.monotonic() + self.settings.batch_wait_s
                )
                status = await wait_for_batch(
                    self.destination.client,
                    batch_id,
                    deadline=deadline,
                    poll_s=self.settings.batch_poll_s,
                    retrying=self._retrying(),
                    first_poll_now=True,
                )
                if self.closing.is_set():
                    raise Closing
                if status is None:
                    return _Park(
                        f"Omnisend batch {batch_id} with an older state of this order has not ended;"
                        " redrive once it has (docs/connectors.md#omnisend-batches)"
                    )
                self._ended_batches.add(batch_id)
            del row.sent[key]
        return None

    async def _not_applicable(
        self, conn: Conn, row: DeliveryRow, items: Sequence[Item], refused: NotApplicable
    ) -> None:
        """Record the events as handled and the order as one the destination cannot take.

        Not parked: no redrive can make it deliverable, only a later event can (the next
        `_deliver` of this order checks again and, once applicable, sends its current state).
        """
        if row.not_applicable is None:
            log.info(
                "order not applicable to destination",
                destination=self.name,
                order_id=row.order_id,
                reason=refused.reason,
            )
        row.not_applicable = refused.reason
        last = items[-1]
        row.last_version = max(row.last_version, last.version)
        row.last_position = max(row.last_position, last.position)
        await self.store.record(conn, row, [(i.event_id, i.version, "not_applicable", 0) for i in items])
        self.metrics.not_applicable_events.labels(self.name, refused.code).inc(len(items))

    async def _perform(
        self, conn: Conn, row: DeliveryRow, call: DestinationCall, depth: int = 0
    ) -> _Park | None:
        at_most_once = call.kind == "omnisend.event"
        if at_most_once:
            marker = f"inflight:{call.key}"
            if marker in row.sent:
                log.warning("event outcome unknown; not re-sent", destination=self.name, event_key=call.key)
                self.metrics.outbound_calls.labels(self.name, "unknown").inc()
                return None
            row.sent[marker] = str(int(time.time()))
            await self.store.save(conn, row)
        if call.kind == "omneo.order.create":
            row.status = "creating"
            await self.store.save(conn, row)
        settled = self._settled.pop(row.order_id, None) if call.kind in BATCHED_KINDS else None
        try:
            if isinstance(settled, Success):  # the batch did it: no call of its own
                outcome: Outcome = settled
            else:
                outcome = await self._call(row, call, settled, retry_ambiguous=not at_most_once)
        except Closing:
            if at_most_once:  # no ambiguous attempt (those return at once): never accepted
                await self._forget_inflight(conn, row, call)
            raise
        return await self._after_call(conn, row, call, outcome, depth, at_most_once=at_most_once)

    async def _call(
        self, row: DeliveryRow, call: DestinationCall, settled: Outcome | None, *, retry_ambiguous: bool
    ) -> Outcome:
        """The call with retries; with `settled` (its batch item's answer) that answer is the first try."""
        first = [settled] if settled is not None else []

        async def attempt() -> Outcome:
            if first and isinstance(self.destination, OmnisendDestination):
                return await self.destination.settle(call, row, first.pop())
            return await self.destination.perform(call, row)

        return await call_with_retries(
            attempt,
            budget=self.budget,
            settings=self.settings,
            closing=self.closing,
            on_outcome=self._count,
            retry_ambiguous=retry_ambiguous and call.kind != "omneo.order.create",
        )

    async def _after_call(
        self,
        conn: Conn,
        row: DeliveryRow,
        call: DestinationCall,
        outcome: Outcome,
        depth: int,
        *,
        at_most_once: bool,
    ) -> _Park | None:
        if at_most_once and not _maybe_accepted(outcome):
            await self._forget_inflight(conn, row, call)
        if call.kind == "omneo.order.create" and isinstance(outcome, Retryable) and outcome.ambiguous:
            park = await self._reconcile_create(conn, row)
            if park is not None:
                return park
            if row.remote_id is None:  # confirmed absent: try again, a bounded number of times
                if depth >= 2:
                    return _Park("omneo order create kept failing ambiguously", outcome.body)
                return await self._perform(conn, row, call, depth + 1)
            return None
        if isinstance(outcome, Success):
            if self._after_success is not None:  # test hook: crash between the 2xx and our record
                self._after_success()
            self.destination.applied(call, outcome, row)
            if call.kind == "omneo.order.create":  # the remote id must survive a crash now
                await self.store.save(conn, row)
            return None
        if isinstance(outcome, AuthFailure):
            raise Halted(outcome)
        if isinstance(outcome, Permanent):
            return _Park(f"{call.kind} rejected: HTTP {outcome.status} {outcome.reason}", outcome.body)
        if at_most_once and outcome.ambiguous:
            log.warning("event outcome unknown; not re-sent", destination=self.name, event_key=call.key)
            return None
        return _Park(
            f"{call.kind} failed after {self.settings.max_attempts} attempts: {outcome.reason}", outcome.body
        )

    async def _forget_inflight(self, conn: Conn, row: DeliveryRow, call: DestinationCall) -> None:
        """Omnisend definitely did not take the event: drop its marker so a redrive sends it."""
        row.sent.pop(f"inflight:{call.key}", None)
        await self.store.save(conn, row)

    async def _reconcile_create(self, conn: Conn, row: DeliveryRow) -> _Park | None:
        """A create may have happened: adopt the existing Omneo order, or clear the intent."""
        assert isinstance(self.destination, OmneoDestination)
        found = await call_with_retries(
            lambda: self.destination.find_order(row.order_id),  # type: ignore[attr-defined]
            budget=self.budget,
            settings=self.settings,
            closing=self.closing,
            on_outcome=self._count,
        )
        if isinstance(found, AuthFailure):
            raise Halted(found)
        if not isinstance(found, Success):
            return _Park(
                "omneo order create outcome unknown and the lookup by external_id failed;"
                " check Omneo for the order, then redrive",
                getattr(found, "body", None),
            )
        if found.remote_id:
            log.info("adopted existing Omneo order", order_id=row.order_id, remote_id=found.remote_id)
            row.remote_id = found.remote_id
            row.remote_exists = True
        row.status = "ok"
        await self.store.save(conn, row)
        return None

    async def _park(
        self,
        conn: Conn,
        order_id: str,
        items: Sequence[Item],
        reason: str,
        detail: Any = None,
        *,
        queued: bool = False,
    ) -> None:
        rows = [(i.event_id, i.version, i.position, i.raw) for i in items]
        if queued:
            for r in rows:
                await self.store.park(conn, order_id, [r], reason)
        else:
            await self.store.park(conn, order_id, rows, reason, detail)
            log.warning("order parked", destination=self.name, order_id=order_id, reason=reason)
        await self._update_parked_gauge()

    async def _update_parked_gauge(self) -> None:
        self.metrics.parked_orders.labels(self.name).set(await self.store.parked_count())

"""``decide(command, state) -> events``: every rule of docs/architecture.md#domain, as a pure function.

The clock (``now``) and the id source (``ids``) are parameters, so the same inputs always
decide the same events. A broken rule raises :class:`DomainError` with a reason; a command
that would change nothing returns ``[]`` (a repeated PUT, cancel, delivered, or a shipment
re-sent with the same id and content), so retries are harmless.

Decisions beyond docs/architecture.md#domain:
- Currency: ``PlaceOrder.currency`` defaults to ``default_currency`` (AUD: Omneo is an
  Australian platform, and its curl examples carry no currency); it never changes afterwards.
  Any currency given on an item, amount or payment must be the order's (``mixed_currency``).
- Once anything has shipped, lines and amounts are frozen (stricter than "shipped lines
  cannot change"): order-level amounts are apportioned across shipments, so changing any line
  or amount would rewrite Transactions Omneo already holds. Status and details may change.
- Omneo producers cancel with ``PUT {"status": "cancelled"}``: a status of ``cancelled`` or
  ``canceled`` decides ``OrderCanceled`` alone, exactly as the cancel endpoint does, and the
  fold gives every canceled order the status ``cancelled`` (``state.CANCELED_STATUS``), so
  every route reads and lists a cancellation the same way.
- A canceled order accepts only refunds, voids, restocks, deliveries of shipments already on
  their way, a repeated cancel or an update that changes nothing (no-ops), and delete. A fully shipped order cannot be canceled
  (refund and restock instead). A deleted order accepts nothing (``order_deleted``, 410).
- Payments: captures never exceed the total; refunds never exceed what was captured; a void
  never exceeds the authorisation still outstanding (authorized - captured - voided, floored
  at 0); open authorisations never exceed the total. An update cannot lower the total below
  what was captured.
- Shipment ids default to ``S<n>``; lines are named by ``line_id`` or by ``sku`` (an sku that
  names two lines is ambiguous and refused). Restocks: returns of shipped quantities, or
  (canceled orders only) of unshipped ones, never more than that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from ledger.domain.commands import (
    CancelOrder,
    Command,
    DeleteOrder,
    DispatchShipment,
    MarkDelivered,
    PlaceOrder,
    QuantityIn,
    RecordPayment,
    RestockItems,
    UpdateOrder,
)
from ledger.domain.errors import DomainError, FieldError
from ledger.domain.events import (
    ItemsRestocked,
    OrderCanceled,
    OrderDeleted,
    OrderDetailsChanged,
    OrderEvent,
    OrderLinesChanged,
    OrderPlaced,
    OrderStatusChanged,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentRefunded,
    PaymentVoided,
    ShipmentDelivered,
    ShipmentDispatched,
)
from ledger.domain.pricing import MoneyReader, build_amounts, build_lines
from ledger.domain.state import Order
from ledger.domain.values import Address, Customer, OrderDetails, QuantityLine

__all__ = ["CANCELED_STATUSES", "DEFAULT_CURRENCY", "IdSource", "decide"]

DEFAULT_CURRENCY = "AUD"
CANCELED_STATUSES = frozenset({"cancelled", "canceled"})
IdSource = Callable[[], UUID]

_CUSTOMER_FIELDS = ("profile_id", "email", "phone", "first_name", "last_name")
_DETAIL_FIELDS = (
    "payment_method",
    "shipping_method",
    "discount_code",
    "discount_type",
    "note",
)


def decide(
    command: Command,
    state: Order | None,
    *,
    now: datetime,
    ids: IdSource,
    default_currency: str = DEFAULT_CURRENCY,
) -> list[OrderEvent]:
    if isinstance(command, PlaceOrder):
        if state is not None:
            raise DomainError("order_exists", f"order {state.id} already exists")
        return [_place(command, now=now, order_id=ids(), default_currency=default_currency)]
    if state is None:
        raise DomainError("order_not_found", "no such order")
    if state.deleted:
        raise DomainError("order_deleted", f"order {state.id} was deleted; its history stays readable")
    if isinstance(command, DeleteOrder):
        return [OrderDeleted(reason=command.reason)]
    if isinstance(command, CancelOrder):
        return _cancel(command, state, now)
    if isinstance(command, RecordPayment):
        return _payment(command, state)
    if isinstance(command, MarkDelivered):
        return _delivered(command, state, now)
    if isinstance(command, RestockItems):
        return _restock(command, state)
    if isinstance(command, UpdateOrder):
        events = _update(command, state, now)
        if events and state.canceled:
            raise _canceled_error()
        return events
    if state.canceled:
        raise _canceled_error()
    return _dispatch(command, state, now)


def _canceled_error() -> DomainError:
    return DomainError("order_canceled", "the order was canceled; only refunds, voids and restocks apply")


def _details_from(command: PlaceOrder | UpdateOrder, previous: OrderDetails) -> OrderDetails:
    present = command.model_fields_set
    customer = previous.customer.model_copy(
        update={name: getattr(command, name) for name in _CUSTOMER_FIELDS if name in present}
    )
    update: dict[str, object] = {name: getattr(command, name) for name in _DETAIL_FIELDS if name in present}
    for name in ("billing_address", "shipping_address"):
        if name in present:
            given = getattr(command, name)
            update[name] = None if given is None else Address(**given.model_dump())
    if "tags" in present:
        update["tags"] = tuple(command.tags or ())
    return previous.model_copy(update={"customer": Customer(**customer.model_dump()), **update})


def _place(command: PlaceOrder, *, now: datetime, order_id: UUID, default_currency: str) -> OrderPlaced:
    money = MoneyReader(command.currency or default_currency)
    lines = build_lines(command.items or [], money)
    money.raise_if_errors()
    amounts = build_amounts(command, lines, money, None)
    return OrderPlaced(
        order_id=order_id,
        external_id=command.external_id,
        source=command.source,
        currency=money.currency,
        status=command.status or "pending",
        details=_details_from(command, OrderDetails()),
        lines=lines,
        amounts=amounts,
        placed_at=command.placed_at or now,
    )


def _update(command: UpdateOrder, state: Order, now: datetime) -> list[OrderEvent]:
    money = MoneyReader(state.currency)
    money.currency_matches(command.currency, ("currency",))
    money.raise_if_errors()
    events: list[OrderEvent] = []

    details = _details_from(command, state.details)
    if details != state.details:
        changed = tuple(
            name
            for name in OrderDetails.model_fields
            if getattr(details, name) != getattr(state.details, name)
        )
        events.append(OrderDetailsChanged(details=details, changed=changed))

    money_fields = ("items", "total", "subtotal", "discount", "tax", "shipping", "tax_included")
    if any(getattr(command, name) is not None for name in money_fields):
        lines = build_lines(command.items, money, state.lines) if command.items is not None else state.lines
        money.raise_if_errors()
        amounts = build_amounts(command, lines, money, state.amounts)
        if lines != state.lines or amounts != state.amounts:
            if state.shipments:
                raise DomainError(
                    "lines_frozen",
                    "lines and amounts cannot change once anything has shipped "
                    "(Transactions are derived from them)",
                )
            if amounts.total < state.captured:
                raise DomainError(
                    "total_below_captured",
                    f"total {money.major(amounts.total)} is below the {money.major(state.captured)} captured",
                    [FieldError(("total",), "total_below_captured", "refund first")],
                )
            events.append(OrderLinesChanged(lines=lines, amounts=amounts))

    cancels = command.status is not None and command.status.strip().lower() in CANCELED_STATUSES
    if cancels and state.canceled:
        pass  # already canceled (by any route): its status reads `cancelled`, nothing to change
    elif cancels:
        events.extend(_cancel(CancelOrder(), state, now))  # the fold sets status `cancelled`
    elif command.status is not None and command.status != state.status:
        events.append(OrderStatusChanged(status=command.status))
    return events


def _payment(command: RecordPayment, state: Order) -> list[OrderEvent]:
    if state.canceled and command.kind not in ("refunded", "voided"):
        raise DomainError(
            "order_canceled", f"a canceled order cannot be {command.kind}; refund or void instead"
        )
    money = MoneyReader(state.currency)
    money.currency_matches(command.currency, ("currency",))
    amount = money.minor(command.amount, ("amount",))
    money.raise_if_errors()
    p, total = state.payments, state.amounts.total
    if command.kind == "authorized":
        limit, what = total - max(p.authorized - p.voided, 0), "open authorisations would exceed the total"
        event: OrderEvent = PaymentAuthorized(
            amount=amount, method=command.method, reference=command.reference
        )
    elif command.kind == "captured":
        limit, what = total - p.captured, "captures would exceed the order total"
        event = PaymentCaptured(amount=amount, method=command.method, reference=command.reference)
    elif command.kind == "refunded":
        limit, what = p.captured - p.refunded, "refunds would exceed what was captured"
        event = PaymentRefunded(amount=amount, method=command.method, reference=command.reference)
    else:
        limit, what = (
            max(p.authorized - p.captured - p.voided, 0),
            "void exceeds the outstanding authorisation",
        )
        event = PaymentVoided(amount=amount, method=command.method, reference=command.reference)
    if amount > limit:
        code = {
            "authorized": "authorization_exceeds_total",
            "captured": "capture_exceeds_total",
            "refunded": "refund_exceeds_captured",
            "voided": "void_exceeds_authorized",
        }[command.kind]
        reason = f"{what}: {money.major(amount)} asked, at most {money.major(max(limit, 0))} allowed"
        raise DomainError(code, reason, [FieldError(("amount",), code, reason)])
    return [event]


def _resolve(
    requested: Sequence[QuantityIn], state: Order, available: dict[str, int], verb: str
) -> tuple[QuantityLine, ...]:
    """Line quantities keyed by line id, checked against ``available`` (what may still be ``verb``)."""
    errors: list[FieldError] = []
    wanted: dict[str, int] = {}
    for i, q in enumerate(requested):
        if q.line_id is not None:
            if state.line(q.line_id) is None:
                errors.append(FieldError(("lines", i, "line_id"), "unknown_line", f"no line {q.line_id!r}"))
                continue
            line_id = q.line_id
        else:
            matches = [line.line_id for line in state.lines if line.sku == q.sku]
            if len(matches) != 1:
                code = "unknown_sku" if not matches else "ambiguous_sku"
                msg = f"no line with sku {q.sku!r}" if not matches else f"sku {q.sku!r} names several lines"
                errors.append(FieldError(("lines", i, "sku"), code, msg))
                continue
            line_id = matches[0]
        wanted[line_id] = wanted.get(line_id, 0) + q.quantity
    for line_id, qty in wanted.items():
        left = available.get(line_id, 0)
        if qty > left:
            errors.append(
                FieldError(
                    ("lines",), f"over_{verb}", f"line {line_id}: {qty} asked, {left} left to be {verb}"
                )
            )
    if errors:
        codes = {e.code for e in errors}
        code = codes.pop() if len(codes) == 1 else "invalid_lines"
        raise DomainError(code, "; ".join(e.msg for e in errors), errors)
    return tuple(QuantityLine(line_id=k, quantity=v) for k, v in wanted.items())


def _dispatch(command: DispatchShipment, state: Order, now: datetime) -> list[OrderEvent]:
    existing = state.shipment(command.shipment_id) if command.shipment_id is not None else None
    shipped = state.shipped_quantities()
    if existing is not None:
        # A retry with the same id: same lines means nothing to do, different lines is a conflict.
        available = {line.line_id: line.quantity for line in state.lines}
        if _resolve(command.lines, state, available, "shipped") == existing.lines:
            return []
        raise DomainError(
            "shipment_exists", f"shipment {existing.shipment_id} already exists with other lines"
        )
    available = {line.line_id: line.quantity - shipped.get(line.line_id, 0) for line in state.lines}
    lines = _resolve(command.lines, state, available, "shipped")
    shipment_id = command.shipment_id
    if shipment_id is None:
        n = len(state.shipments) + 1
        while state.shipment(f"S{n}") is not None:
            n += 1
        shipment_id = f"S{n}"
    return [
        ShipmentDispatched(
            shipment_id=shipment_id,
            lines=lines,
            carrier=command.carrier,
            tracking_code=command.tracking_code,
            tracking_url=command.tracking_url,
            location_id=command.location_id,
            dispatched_at=command.dispatched_at or now,
        )
    ]


def _delivered(command: MarkDelivered, state: Order, now: datetime) -> list[OrderEvent]:
    shipment = state.shipment(command.shipment_id)
    if shipment is None:
        raise DomainError("shipment_not_found", f"no shipment {command.shipment_id!r} on this order")
    if shipment.delivered_at is not None:
        return []
    return [ShipmentDelivered(shipment_id=shipment.shipment_id, delivered_at=command.delivered_at or now)]


def _restock(command: RestockItems, state: Order) -> list[OrderEvent]:
    shipped = state.shipped_quantities()
    restocked = state.restocked_quantities()
    available = {
        line.line_id: (line.quantity if state.canceled else shipped.get(line.line_id, 0))
        - restocked.get(line.line_id, 0)
        for line in state.lines
    }
    lines = _resolve(command.lines, state, available, "restocked")
    return [ItemsRestocked(lines=lines, location_id=command.location_id, reason=command.reason)]


def _cancel(command: CancelOrder, state: Order, now: datetime) -> list[OrderEvent]:
    if state.canceled:
        return []
    if state.fully_shipped:
        raise DomainError(
            "order_fully_shipped", "everything has shipped; refund and restock instead of canceling"
        )
    return [OrderCanceled(reason=command.reason, canceled_at=command.canceled_at or now)]

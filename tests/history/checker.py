"""One checker over a whole run's history: what was lost, duplicated, reordered or stuck.

Fault tiers (the chain tier, the Kafka failover tier) record what happened and hand it here as a
`History`; the checker knows nothing of processes, brokers or vendors. It counts per order and
per destination:

- **lost**: an order the client was told was placed (2xx) that the ledger does not hold; an
  order the ledger holds that a destination never received (no create); a record a destination
  must hold (an Omneo Transaction) that it does not.
- **duplicated**: an order placed once that the ledger holds twice; an order created twice at a
  destination; a record held twice (two Transactions with one external id); any effect for an
  order or a record the ledger never had.
- **reordered**: a destination received an older state of an order after a newer one, or a state
  the order never had.
- **stuck**: a destination received the order but not its final state.

States are whatever the destination can observe of an order (Omneo: its status; Omnisend:
payment and fulfilment status), listed per order in ledger version order: a destination may
skip states (coalescing, unchanged fields) and may receive one state again (a redelivery), but
never go back. Pass: every count is zero (`Report.ok`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Expected", "History", "Record", "Report", "Write", "check", "collapse"]

Kind = Literal["create", "update"]


@dataclass(frozen=True, slots=True)
class Write:
    """One successful (2xx) write a destination received, in the order it received them."""

    destination: str
    order_id: str
    kind: Kind
    state: Hashable | None = None  # the order state it carried; None when it carries none


@dataclass(frozen=True, slots=True)
class Record:
    """A record a destination holds at the end of the run (an Omneo Transaction, say)."""

    destination: str
    order_id: str
    key: str


@dataclass(frozen=True, slots=True)
class Expected:
    """What one destination must end up with for one order, from the ledger's own history."""

    states: tuple[Hashable, ...]  # observable states in version order (see `collapse`)
    records: frozenset[str] = frozenset()  # keys of the records it must hold exactly once


@dataclass(frozen=True, slots=True)
class History:
    """Everything the checker looks at.

    `placed`: the client's key of each order it was told was placed -> the ledger order ids
    that carry that key. `expected`: (destination, order id) -> what that destination must end
    up with. `writes` in arrival order (per destination); `records` as held at the end.
    """

    placed: Mapping[str, Sequence[str]]
    expected: Mapping[tuple[str, str], Expected]
    writes: Sequence[Write] = ()
    records: Sequence[Record] = ()


@dataclass
class Report:
    """Each anomaly as one line naming the order and the destination; counts are list lengths."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.stuck)

    def counts(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "reordered": len(self.reordered),
            "stuck": len(self.stuck),
        }

    def summary(self, limit: int = 5) -> str:
        """The counts and the first few anomalies of each kind (for an assertion message)."""
        lines = [" ".join(f"{k}={v}" for k, v in self.counts().items())]
        for name in ("lost", "duplicated", "reordered", "stuck"):
            lines += [f"  {name}: {item}" for item in getattr(self, name)[:limit]]
        return "\n".join(lines)


def collapse(states: Iterable[Hashable]) -> tuple[Hashable, ...]:
    """States in version order with consecutive repeats dropped (events that changed nothing
    a destination can see)."""
    out: list[Hashable] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return tuple(out)


def check(history: History) -> Report:
    """Count every anomaly of `history` (see the module docstring for what each one means)."""
    report = Report()
    _check_ledger(history.placed, report)
    writes: dict[tuple[str, str], list[Write]] = defaultdict(list)
    for write in history.writes:
        writes[(write.destination, write.order_id)].append(write)
    records: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for record in history.records:
        records[(record.destination, record.order_id)][record.key] += 1
    for pair, expected in history.expected.items():
        _check_order(pair, expected, writes.get(pair, []), records.get(pair, Counter()), report)
    for destination, order_id in sorted(set(writes) - set(history.expected)):
        report.duplicated.append(f"{destination} {order_id}: written, but the ledger has no such order")
    for destination, order_id in sorted(set(records) - set(history.expected)):
        report.duplicated.append(f"{destination} {order_id}: holds records of an order the ledger lacks")
    return report


def _check_ledger(placed: Mapping[str, Sequence[str]], report: Report) -> None:
    for key, order_ids in placed.items():
        if not order_ids:
            report.lost.append(f"ledger {key}: acknowledged to the client, not in the ledger")
        elif len(order_ids) > 1:
            report.duplicated.append(f"ledger {key}: placed once, held {len(order_ids)} times")


def _check_order(
    pair: tuple[str, str], expected: Expected, writes: list[Write], held: Counter[str], report: Report
) -> None:
    destination, order_id = pair
    where = f"{destination} {order_id}"
    creates = sum(1 for w in writes if w.kind == "create")
    if expected.states:
        if creates == 0:
            report.lost.append(f"{where}: never created")
        elif creates > 1:
            report.duplicated.append(f"{where}: created {creates} times")
    elif creates:
        report.duplicated.append(f"{where}: created, but it should not be there")
    reached = _walk(where, expected.states, [w.state for w in writes if w.state is not None], report)
    if creates and expected.states and reached < len(expected.states) - 1:
        seen = expected.states[reached] if reached >= 0 else None
        report.stuck.append(f"{where}: at {seen!r}, the ledger's final state is {expected.states[-1]!r}")
    for key in sorted(expected.records):
        if held[key] == 0:
            report.lost.append(f"{where}: record {key} missing")
        elif held[key] > 1:
            report.duplicated.append(f"{where}: record {key} held {held[key]} times")
    for key in sorted(set(held) - expected.records):
        report.duplicated.append(f"{where}: record {key} the ledger never derived")


def _walk(where: str, states: Sequence[Hashable], seen: Sequence[Hashable], report: Report) -> int:
    """Follow the states a destination received through the ledger's; the index reached.

    A state may repeat (redelivery) or skip ahead (coalescing); going back, or a state the
    order never had, is one `reordered` anomaly for this order (the first one is named).
    """
    at = -1
    flagged = False
    for state in seen:
        later = [i for i in range(max(at, 0), len(states)) if states[i] == state]
        if later:
            at = later[0]
        elif not flagged:
            flagged = True
            if state in states:
                report.reordered.append(f"{where}: received {state!r} after {states[at]!r}")
            else:
                report.reordered.append(f"{where}: received {state!r}, a state the order never had")
    return at

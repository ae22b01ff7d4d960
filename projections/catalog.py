"""The projections this deploy runs, by name (what `ledger projections ... NAME` accepts)."""

from __future__ import annotations

from projections import order_state, transactions
from projections.definition import Projection

PROJECTIONS: dict[str, Projection] = {
    order_state.PROJECTION.name: order_state.PROJECTION,
    transactions.PROJECTION.name: transactions.PROJECTION,
}


def get(name: str) -> Projection:
    """The definition named `name`; `KeyError` lists the known ones."""
    try:
        return PROJECTIONS[name]
    except KeyError:
        raise KeyError(f"unknown projection {name!r}; known: {', '.join(sorted(PROJECTIONS))}") from None

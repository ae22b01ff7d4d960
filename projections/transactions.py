"""The `transactions` projection: one row per Transaction the domain derives from an order.

`derive_transactions` is the same pure function the Omneo worker uses, so the read model and
the destination can never disagree. The primary key (order id, shipment id) makes "a
Transaction counted twice" impossible by construction; rows of an order are replaced as a
whole on each of its events (a full refund flips `voided` on all of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger.domain.state import Order
from ledger.domain.transactions import derive_transactions
from ledger.domain.views import JSON_MONEY, NATIVE_DATETIMES, transaction_to_json
from projections.definition import VIEW_MODULES, Column, Projection, Row, Table
from projections.encoding import json_value, text_value

NAME = "transactions"
#: Bump when the rows change (a deploy with changed code under the same version is refused).
VERSION = 4  # 4: the domain folds PersonalDataErased (docs/privacy.md)
MODULES = (__name__, *VIEW_MODULES)

TRANSACTIONS = Table(
    base="transactions",
    columns=(
        Column("order_id", "uuid NOT NULL"),
        Column("shipment_id", "text NOT NULL"),
        Column("external_id", "text NOT NULL"),
        Column("order_external_id", "text"),
        Column("sequence", "integer NOT NULL"),
        Column("currency", "text NOT NULL"),
        Column("lines_total", "bigint NOT NULL"),
        Column("order_amounts_share", "bigint NOT NULL"),
        Column("total", "bigint NOT NULL"),
        Column("location_id", "text"),
        Column("voided", "boolean NOT NULL"),
        Column("dispatched_at", "timestamptz NOT NULL"),
        Column("transacted_at", "timestamptz NOT NULL"),
        Column("lines", "json NOT NULL"),
        Column("doc", "text NOT NULL", document=True),
    ),
    primary_key=("order_id", "shipment_id"),
    key="order_id",
    indexes=(
        ("transacted", "(transacted_at, order_id, shipment_id)"),
        ("external", "(external_id)"),
    ),
)


def rows(order: Order) -> Mapping[str, Sequence[Row]]:
    """One row per derived Transaction of the order."""
    out: list[Row] = []
    for tx in derive_transactions(order):
        doc = transaction_to_json(tx, money=JSON_MONEY, timestamps=NATIVE_DATETIMES)
        # Serialize the items once: the same bytes go into `lines` and, embedded, into `doc`.
        items = doc["items"] = json_value(doc["items"])
        out.append(
            (
                tx.order_id,
                tx.shipment_id,
                tx.external_id,
                tx.order_external_id,
                tx.sequence,
                tx.currency,
                tx.lines_total,
                tx.order_amounts_share,
                tx.total,
                tx.location_id,
                tx.voided,
                tx.dispatched_at,
                tx.transacted_at,
                items,
                text_value(doc),
            )
        )
    return {TRANSACTIONS.base: out}


PROJECTION = Projection(name=NAME, version=VERSION, tables=(TRANSACTIONS,), rows=rows, modules=MODULES)

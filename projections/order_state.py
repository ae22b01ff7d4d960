"""The `order_state` projection: orders and their lines as queryable tables behind the list API.

Rows are a pure function of the folded order: the columns the list filters need, plus the
domain's full JSON view (`order_to_json`, statuses and Transactions included) as `doc`, so the
API serves an order without refolding it. Deleted orders keep their row (`deleted`) so the
API can answer 410 Gone; list queries leave them out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ledger.domain.state import Order
from ledger.domain.views import JSON_MONEY, NATIVE_DATETIMES, order_to_json
from projections.definition import VIEW_MODULES, Column, Projection, Row, Table
from projections.encoding import text_value

NAME = "order_state"
#: Bump when the rows change (a deploy with changed code under the same version is refused).
VERSION = 5  # 5: the domain folds PersonalDataErased (docs/privacy.md); 4: a canceled order reads `cancelled`
MODULES = (__name__, *VIEW_MODULES)

ORDERS = Table(
    base="order_state",
    columns=(
        Column("id", "uuid NOT NULL"),
        Column("external_id", "text"),
        Column("source", "text"),
        Column("profile_id", "text"),
        Column("email", "text"),
        Column("status", "text NOT NULL"),
        Column("payment_status", "text NOT NULL"),
        Column("fulfillment_status", "text NOT NULL"),
        Column("currency", "text NOT NULL"),
        Column("total", "bigint NOT NULL"),
        Column("captured", "bigint NOT NULL"),
        Column("refunded", "bigint NOT NULL"),
        Column("canceled", "boolean NOT NULL"),
        Column("deleted", "boolean NOT NULL"),
        Column("created_at", "timestamptz NOT NULL"),
        Column("updated_at", "timestamptz NOT NULL"),
        Column("version", "integer NOT NULL"),
        Column("doc", "text NOT NULL", document=True),
    ),
    primary_key=("id",),
    key="id",
    # Every list filter is an equality plus the (updated_at, id) keyset the cursor pages on.
    indexes=(
        ("updated", "(updated_at, id)"),
        ("status", "(status, updated_at, id)"),
        ("payment", "(payment_status, updated_at, id)"),
        ("fulfillment", "(fulfillment_status, updated_at, id)"),
        ("external", "(external_id)"),
        ("profile", "(profile_id, updated_at, id)"),
    ),
)

LINES = Table(
    base="order_lines",
    columns=(
        Column("order_id", "uuid NOT NULL"),
        Column("line_id", "text NOT NULL"),
        Column("line_no", "integer NOT NULL"),
        Column("sku", "text"),
        Column("name", "text NOT NULL"),
        Column("product_id", "text"),
        Column("variant_id", "text"),
        Column("quantity", "integer NOT NULL"),
        Column("shipped_quantity", "integer NOT NULL"),
        Column("price_sell", "bigint NOT NULL"),
        Column("price_current", "bigint NOT NULL"),
        Column("price_original", "bigint NOT NULL"),
        Column("discount", "bigint NOT NULL"),
        Column("tax", "bigint NOT NULL"),
        Column("currency", "text NOT NULL"),
    ),
    primary_key=("order_id", "line_id"),
    key="order_id",
    indexes=(("sku", "(sku)"),),
)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def rows(order: Order) -> Mapping[str, Sequence[Row]]:
    """The order's row and its line rows."""
    doc = order_to_json(order, money=JSON_MONEY, timestamps=NATIVE_DATETIMES)
    shipped = order.shipped_quantities()
    order_row: Row = (
        order.id,
        order.external_id,
        order.source,
        order.customer.profile_id,
        order.customer.email,
        order.status,
        doc["payment_status"],
        doc["fulfillment_status"],
        order.currency,
        order.amounts.total,
        order.captured,
        order.refunded,
        order.canceled,
        order.deleted,
        order.created_at,
        order.updated_at,
        order.version,
        text_value(doc),
    )
    line_rows: list[Row] = [
        (
            order.id,
            line.line_id,
            number,
            line.sku,
            line.name,
            _text(line.product_id),
            _text(line.variant_id),
            line.quantity,
            shipped.get(line.line_id, 0),
            line.price_sell,
            line.price_current,
            line.price_original,
            line.discount,
            line.tax,
            order.currency,
        )
        for number, line in enumerate(order.lines, start=1)
    ]
    return {ORDERS.base: [order_row], LINES.base: line_rows}


PROJECTION = Projection(name=NAME, version=VERSION, tables=(ORDERS, LINES), rows=rows, modules=MODULES)

"""Omnisend v3 products as the seed asks: category paths with parents, prices with tax, discountValue."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from consumers.omnisend.mapping import OmnisendState, category_path, map_event
from consumers.sandbox.omnisend_rules import OmnisendRules
from tests.unit.mapping.story import OrderStory, parse


def tax_exclusive_story(categories: list[str]) -> tuple[OrderStory, list[dict[str, Any]]]:
    """Two units at 10.00 plus 2.00 tax on the line, 1.00 off (fixedAmount): total 21.00."""
    story = OrderStory()
    item = {
        "line_id": "L1",
        "name": "Trench",
        "quantity": 2,
        "price_sell": Decimal("10.00"),
        "price_current": Decimal("10.00"),
        "tax": Decimal("2.00"),
        "product_id": "P1",
        "categories": categories,
    }
    envelopes = story.place(
        items=[item],
        subtotal=Decimal("20.00"),
        tax=Decimal("2.00"),
        tax_included=False,
        discount=Decimal("1.00"),
        discount_type="fixedAmount",
        discount_code="TENOFF",
        total=Decimal("21.00"),
    )
    return story, envelopes


def test_a_category_path_names_each_parent_first() -> None:
    assert category_path("Clothing > Coats") == [("Clothing", "Clothing"), ("Clothing > Coats", "Coats")]
    assert category_path(" Clothing>Coats >Trench ")[-1] == ("Clothing > Coats > Trench", "Trench")
    assert category_path("sale") == [("sale", "sale")]


def test_categories_omnisend_lacks_are_created_before_the_order_and_products_carry_parents() -> None:
    _, envelopes = tax_exclusive_story(["Clothing > Coats", "Sale"])
    calls = map_event(parse(envelopes[0]), OmnisendState(categories={"Sale"}))
    assert [c.kind for c in calls] == ["omnisend.category.create"] * 2 + ["omnisend.order.create"]
    assert [c.body for c in calls[:2]] == [
        {"categoryID": "Clothing", "title": "Clothing"},
        {"categoryID": "Clothing > Coats", "title": "Coats"},
    ]
    body = calls[-1].body
    assert body is not None
    assert body["products"][0]["categoryIDs"] == ["Clothing", "Clothing > Coats", "Sale"]


def test_tax_exclusive_price_includes_the_line_tax_and_fixed_discount_value_is_sent() -> None:
    _, envelopes = tax_exclusive_story(["Sale"])
    (call,) = map_event(parse(envelopes[0]), OmnisendState(categories={"Sale"}))
    body = call.body
    assert body is not None
    assert body["products"][0]["price"] == 1100  # 10.00 + 2.00 tax / 2 units
    assert (body["discountType"], body["discountValue"], body["discountSum"]) == ("fixedAmount", 100, 100)
    assert body["subTotalTaxIncluded"] is False
    assert OmnisendRules(seed_rules=True).create(body) == []


def test_tax_inclusive_price_is_the_selling_price() -> None:
    story = OrderStory()
    (call,) = map_event(parse(story.place(price="19.95")[0]), OmnisendState(categories={"cat-a", "cat-b"}))
    assert call.body is not None
    assert call.body["products"][0]["price"] == 1995
    assert "discountValue" not in call.body

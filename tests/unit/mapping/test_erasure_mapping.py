"""An erasure reaches the destinations as the deletes their APIs offer, and nothing follows it."""

from __future__ import annotations

from consumers.fanout.mapping_types import REMOTE_ID
from consumers.omneo.mapping import OmneoState
from consumers.omneo.mapping import map_batch as omneo_batch
from consumers.omneo.mapping import map_event as omneo_event
from consumers.omnisend.mapping import OmnisendOptions, OmnisendState
from consumers.omnisend.mapping import map_batch as omnisend_batch
from consumers.omnisend.mapping import map_event as omnisend_event
from tests.unit.mapping.story import OrderStory, parse


def _story() -> OrderStory:
    story = OrderStory()
    story.place()
    return story


def test_omneo_deletes_an_erased_order_it_holds_and_sends_nothing_of_it_afterwards() -> None:
    story = _story()
    [erased] = story.erase()
    calls = omneo_event(parse(erased), OmneoState("1001", {}))
    assert [(c.kind, c.method, c.path) for c in calls] == [
        ("omneo.order.delete", "DELETE", f"/api/v3/orders/{REMOTE_ID}")
    ]
    after = OmneoState("1001", dict(calls[0].remember))
    [paid] = story.pay("10.00")
    assert omneo_event(parse(paid), after) == []
    assert omneo_event(parse(erased), OmneoState()) == []  # Omneo never had it: nothing to delete
    assert [c.kind for c in omneo_batch([parse(e) for e in story.envelopes], OmneoState("1001", {}))] == [
        "omneo.order.delete"
    ]


def test_omnisend_deletes_an_erased_order_in_orders_mode_and_sends_nothing_in_events_mode() -> None:
    story = _story()
    [erased] = story.erase()
    calls = omnisend_event(parse(erased), OmnisendState(exists=True))
    assert [(c.kind, c.method) for c in calls] == [("omnisend.order.delete", "DELETE")]
    after = OmnisendState(exists=False, sent=dict(calls[0].remember))
    [paid] = story.pay("10.00")
    assert omnisend_event(parse(paid), after) == []
    assert omnisend_batch([parse(erased)], OmnisendState(exists=False)) == []
    assert omnisend_event(parse(erased), OmnisendState(exists=True), OmnisendOptions(mode="events")) == []

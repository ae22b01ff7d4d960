"""The service's message-size check measures the sealed form the relay publishes, not the plain one."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from ledger.api.app import event_registry
from ledger.domain.commands import PlaceOrder
from ledger.privacy import Keyring, MemoryKeyStore, PersonalDataCodec
from ledger.privacy.fields import sealed_growth
from ledger.service import _ENVELOPE_OVERHEAD, Actor, CommandResult, OrderService, OrderTooLarge, RequestMeta
from ledger.store import InMemoryEventStore, NewEvent
from ledger_kernel.wire.codec import dumps

ACTOR = Actor("tester", "client-1")
META = RequestMeta(source="api", request_id="req-1", route="POST /orders")
STREAM = "order-5b0c7c36-7f1e-4a3b-9a53-0b8a0d7b8a11"
ADDRESS = {
    "first_name": "Ann",
    "last_name": "Lee",
    "company": "Lee & Söhne Pty Ltd",
    "phone": "+61400000001",
    "address": "1 Long Street",
    "address2": "Unit \u00e9 4\n",  # non-ASCII and an escaped control character
    "city": "Perth",
    "postal_code": "6000",
    "state": "Western Australia",
    "state_code": "WA",
    "country_code": "AU",
}
BODY: dict[str, Any] = {
    "status": "pending",
    "total": Decimal("10.00"),
    "items": [{"name": "Scarf", "quantity": 1, "price_sell": "10.00"}],
    "email": "ann@example.org",
    "phone": "+61400000001",
    "first_name": "Ann",
    "last_name": "Lee",
    "billing_address": ADDRESS,
    "shipping_address": ADDRESS,
    "note": "",
}


def codec() -> PersonalDataCodec:
    return PersonalDataCodec(MemoryKeyStore(), Keyring.from_base64(Keyring.generate_base64()))


async def sealed(c: PersonalDataCodec, data: dict[str, Any]) -> dict[str, Any]:
    [event] = await c.encode(STREAM, [NewEvent("OrderPlaced", data)])
    return dict(event.data)


async def test_sealed_growth_bounds_what_sealing_adds_to_event_data() -> None:
    c = codec()
    for note in ("", "x", "by the gate", "ü" * 301, '\x02 tab\t and quote "', "a" * 5000):
        data = {"details": {"customer": {"profile_id": "p-1", **BODY}, **BODY, "note": note}, "total": 1}
        plain, stored = len(dumps(data)), len(dumps(await sealed(c, data)))
        assert plain < stored <= plain + sealed_growth(data)


async def place(svc: OrderService, **body: Any) -> CommandResult:
    return await svc.handle(
        PlaceOrder.model_validate(BODY | body),
        order_id=None,
        expected_version=None,
        actor=ACTOR,
        idempotency_key=None,
        meta=META,
    )


async def test_sealed_growth_bounds_what_sealing_adds_to_an_order_view() -> None:
    result = await place(OrderService(InMemoryEventStore(event_registry())), note="leave it by the gate")
    view = json.loads(result.document)["data"]
    customer = {name: view[name] for name in ("email", "phone", "first_name", "last_name")}
    details = {name: view[name] for name in ("billing_address", "shipping_address", "note")}
    sealed_details = (await sealed(codec(), {"details": {"customer": customer, **details}}))["details"]
    stored_view = {**view, **sealed_details.pop("customer"), **sealed_details}
    assert len(dumps(view)) < len(dumps(stored_view)) <= len(dumps(view)) + sealed_growth(view)


async def test_an_order_whose_sealed_messages_exceed_the_limit_is_refused_though_its_plain_ones_fit() -> None:
    probe = InMemoryEventStore(event_registry())
    result = await place(OrderService(probe))
    [event] = await probe.read_events()
    plain = len(result.document) + len(dumps(event.data)) + _ENVELOPE_OVERHEAD  # what the old check measured
    limit = plain + 200  # the plain messages fit; the sealed ones (25 personal fields, ~2 KB more) do not
    await place(OrderService(InMemoryEventStore(event_registry()), max_message_bytes=limit))  # unsealed: fits

    store = InMemoryEventStore(event_registry())
    with pytest.raises(OrderTooLarge):
        await place(OrderService(store, max_message_bytes=limit, sealed_growth=sealed_growth))
    assert await store.read_events() == []

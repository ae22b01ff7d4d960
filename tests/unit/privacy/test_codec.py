"""The personal-data codec on an in-memory key store: what is sealed, how it opens, what erasure does."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ledger.privacy import Keyring, MemoryKeyStore, PersonalDataCodec, subject_for
from ledger.privacy.cipher import PART_PREFIX, TOKEN_PREFIX, encrypt_value, is_token
from ledger.privacy.fields import personal_paths
from ledger.store import NewEvent, RecordedEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STREAM = "order-5b0c7c36-7f1e-4a3b-9a53-0b8a0d7b8a11"
DETAILS: dict[str, Any] = {
    "customer": {
        "profile_id": "p-1",
        "email": "ann@example.org",
        "phone": "+61400000001",
        "first_name": "Ann",
    },
    "billing_address": {"address": "1 Long St", "city": "Perth", "country_code": "AU"},
    "shipping_address": None,
    "note": "by the gate",
    "tags": ["vip"],
}


def codec() -> tuple[PersonalDataCodec, MemoryKeyStore]:
    keys = MemoryKeyStore()
    return PersonalDataCodec(keys, Keyring.from_base64(Keyring.generate_base64())), keys


def recorded(event: NewEvent, version: int = 1) -> RecordedEvent:
    data = dict(event.data)
    return RecordedEvent(version, 1, STREAM, version, event.event_id, event.type, 1, data, {}, T0, None, b"")


async def test_personal_fields_are_sealed_and_everything_else_stays_readable() -> None:
    c, _ = codec()
    [sealed] = await c.encode(STREAM, [NewEvent("OrderPlaced", {"details": DETAILS, "total": 100})])
    text = json.dumps(sealed.data)
    for value in ("ann@example.org", "+61400000001", "Ann", "1 Long St", "Perth", "by the gate"):
        assert value not in text
    assert sealed.data["total"] == 100
    assert sealed.data["details"]["customer"]["profile_id"] == "p-1"
    assert sealed.data["details"]["billing_address"]["country_code"] == "AU"
    assert sealed.data["details"]["tags"] == ["vip"]
    assert is_token(sealed.data["details"]["customer"]["email"])
    [opened] = await c.decode([recorded(sealed)])
    assert opened.data == {"details": DETAILS, "total": 100}


async def test_sealing_is_deterministic_so_a_re_appended_event_is_byte_identical() -> None:
    c, _ = codec()
    event = NewEvent("OrderDetailsChanged", {"details": DETAILS, "changed": ["note"]})
    first, second = await c.encode(STREAM, [event]), await c.encode(STREAM, [event])
    assert first[0].data == second[0].data


async def test_a_destroyed_key_opens_its_fields_as_none() -> None:
    c, keys = codec()
    [sealed] = await c.encode(STREAM, [NewEvent("OrderPlaced", {"details": DETAILS})])
    await keys.destroy(["profile:p-1"], erased_by="dpo", basis="request")
    c.forget()
    [opened] = await c.decode([recorded(sealed)])
    customer = opened.data["details"]["customer"]
    assert customer == {"profile_id": "p-1", "email": None, "phone": None, "first_name": None}
    assert opened.data["details"]["billing_address"] == {"address": None, "city": None, "country_code": "AU"}


async def test_events_without_personal_fields_need_no_key() -> None:
    c, keys = codec()
    events = [NewEvent("PaymentCaptured", {"amount": 5, "reference": "r-1"})]
    assert await c.encode(STREAM, events) is events
    assert keys.all == {}


async def test_a_forged_or_damaged_token_never_opens() -> None:
    c, _ = codec()
    [sealed] = await c.encode(STREAM, [NewEvent("OrderPlaced", {"details": DETAILS})])
    token = sealed.data["details"]["customer"]["email"]
    damaged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert await c.reveal({"email": damaged}) == {"email": None}
    assert await c.reveal({"email": TOKEN_PREFIX + "0" * 32 + ".xyz"}) == {"email": None}


def test_the_subject_is_the_profile_else_the_email_index_else_the_order() -> None:
    assert subject_for(STREAM, "p-1", "abc") == "profile:p-1"
    assert subject_for(STREAM, None, "abc") == "email:abc"
    assert subject_for(STREAM, None, None) == "order:5b0c7c36-7f1e-4a3b-9a53-0b8a0d7b8a11"


def test_the_blind_index_ignores_case_and_spaces_and_depends_on_the_key() -> None:
    ring = Keyring.from_base64(Keyring.generate_base64())
    assert ring.blind_index(" Ann@Example.org ") == ring.blind_index("ann@example.org")
    assert Keyring.from_base64(Keyring.generate_base64()).blind_index("ann@example.org") != ring.blind_index(
        "ann@example.org"
    )


def test_the_personal_paths_name_contact_names_addresses_and_the_note() -> None:
    paths = personal_paths()
    for path in ("details.customer.email", "details.shipping_address.postal_code", "details.note"):
        assert path in paths
    assert "details.customer.profile_id" not in paths
    assert "details.billing_address.country_code" not in paths


def test_a_logged_request_path_leaves_the_data_subject_out() -> None:
    from ledger.api.problems import loggable_path

    assert loggable_path("/api/v3/subjects/email:ann@example.org/erase") == "/api/v3/subjects/<subject>/erase"
    assert loggable_path("/api/v3/orders/1") == "/api/v3/orders/1"


async def test_each_personal_part_is_one_token_so_a_sealed_row_stays_small() -> None:
    c, _ = codec()
    details = {
        **DETAILS,
        "shipping_address": {"address": "2 Short St", "city": "Perth", "country_code": "AU"},
    }
    [sealed] = await c.encode(STREAM, [NewEvent("OrderPlaced", {"details": details})])
    stored = sealed.data["details"]
    # The customer, each address and the note: four tokens for eleven personal values.
    assert json.dumps(sealed.data).count("\\u0001pd") == 4
    assert is_token(stored["customer"]["email"])
    assert (stored["customer"]["phone"], stored["customer"]["first_name"]) == (None, None)
    assert "last_name" not in stored["customer"]  # a field the producer did not send stays absent
    [opened] = await c.decode([recorded(sealed)])
    assert opened.data == {"details": details}


async def test_events_sealed_field_by_field_before_part_tokens_still_open_and_erase() -> None:
    c, keys = codec()
    key = await keys.live_key("profile:p-1")
    customer = {k: v if k == "profile_id" else encrypt_value(key, v) for k, v in DETAILS["customer"].items()}
    billing = {
        "address": encrypt_value(key, "1 Long St"),
        "city": encrypt_value(key, "Perth"),
        "country_code": "AU",
    }
    old = {
        **DETAILS,
        "customer": customer,
        "billing_address": billing,
        "note": encrypt_value(key, "by the gate"),
    }
    stored = NewEvent("OrderPlaced", {"details": old})
    [opened] = await c.decode([recorded(stored)])
    assert opened.data == {"details": DETAILS}
    await keys.destroy(["profile:p-1"], erased_by="dpo", basis="request")
    c.forget()
    [erased] = await c.decode([recorded(stored)])
    assert erased.data["details"]["customer"] == {
        "profile_id": "p-1",
        "email": None,
        "phone": None,
        "first_name": None,
    }
    assert erased.data["details"]["note"] is None


async def test_a_part_token_opens_only_into_the_fields_its_object_has() -> None:
    c, _ = codec()
    [sealed] = await c.encode(STREAM, [NewEvent("OrderPlaced", {"details": DETAILS})])
    token = sealed.data["details"]["customer"]["email"]
    # A read-model row keeps the email column only: the phone and names must not appear in it.
    assert await c.reveal([{"id": 7, "email": token}]) == [{"id": 7, "email": "ann@example.org"}]
    assert await c.reveal([token]) == [None]  # outside an object a part has nowhere to open


async def test_a_part_token_relabelled_as_a_value_token_never_opens() -> None:
    c, _ = codec()
    [sealed] = await c.encode(STREAM, [NewEvent("OrderPlaced", {"details": DETAILS})])
    token = sealed.data["details"]["customer"]["email"]
    assert token.startswith(PART_PREFIX)
    relabelled = TOKEN_PREFIX + token[len(PART_PREFIX) :]
    assert await c.reveal({"email": relabelled, "phone": None}) == {"email": None, "phone": None}


async def test_a_new_subjects_key_is_handed_to_the_append_and_used_from_the_cache_once_stored() -> None:
    c, keys = codec()
    event = NewEvent("OrderPlaced", {"details": DETAILS})
    [sealed], new_key = await c.encode_append(STREAM, [event])
    assert new_key is not None
    assert new_key.subject == "profile:p-1"
    assert keys.live == {}  # nothing asked of the key store before the append
    c.settle(new_key, stored=True)
    [again], no_key = await c.encode_append(STREAM, [event])
    assert no_key is None
    assert again.data == sealed.data


async def test_a_lost_new_key_is_never_used_again() -> None:
    c, keys = codec()
    event = NewEvent("OrderPlaced", {"details": DETAILS})
    _, lost = await c.encode_append(STREAM, [event])
    assert lost is not None
    c.settle(lost, stored=False)
    [sealed] = await c.encode(STREAM, [event])  # sealed under the store's key, not the lost one
    stored = keys.live["profile:p-1"].key_id
    assert stored != lost.key_id
    assert stored.hex in sealed.data["details"]["customer"]["email"]
    _, next_key = await c.encode_append(STREAM, [event])
    assert next_key is None


async def test_a_new_key_stored_while_an_erasure_ran_in_this_process_is_not_cached() -> None:
    c, _ = codec()
    event = NewEvent("OrderPlaced", {"details": DETAILS})
    _, new_key = await c.encode_append(STREAM, [event])
    assert new_key is not None
    c.forget()  # the erasure destroyed the subject's keys after this key was made
    c.settle(new_key, stored=True)
    _, next_key = await c.encode_append(STREAM, [event])
    assert next_key is not None
    assert next_key.key_id != new_key.key_id

"""A new subject's first key is stored by the append's own statement: races of first orders and erasures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Collection
from typing import Any
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio

from ledger.api.app import event_registry
from ledger.privacy import Keyring, PersonalDataCodec, PgKeyStore
from ledger.privacy.cipher import DataKey
from ledger.privacy.erasure import PrivacyService
from ledger.privacy.fields import PERSONAL_EVENT_TYPES
from ledger.store import NO_STREAM, EventStore, NewEvent
from ledger.store.chain import verify_stream

pytestmark = pytest.mark.postgres

KEK = Keyring.generate_base64()


class CountingKeys(PgKeyStore):
    """`PgKeyStore` that counts the key-store round trips made before appends."""

    def __init__(self, db: asyncpg.Pool, keyring: Keyring) -> None:
        super().__init__(db, keyring)
        self.live_calls = 0

    async def live_key(self, subject: str) -> DataKey:
        self.live_calls += 1
        return await super().live_key(subject)


def writer(
    pool: asyncpg.Pool, *, cache_s: float = 30.0
) -> tuple[EventStore, PersonalDataCodec, CountingKeys]:
    """A store with its own codec and key cache: one process of the ledger."""
    keyring = Keyring.from_base64(KEK)
    keys = CountingKeys(pool, keyring)
    codec = PersonalDataCodec(keys, keyring, cache_s=cache_s)
    return EventStore(pool, event_registry(), codec=codec), codec, keys


def placed(profile: str) -> NewEvent:
    details = {
        "customer": {"profile_id": profile, "email": f"{profile}@example.org", "first_name": "Ottoline"},
        "billing_address": {"address": "4 Quarry Rd", "city": "Ballarat", "country_code": "AU"},
        "shipping_address": None,
        "note": "by the shed",
    }
    return NewEvent("OrderPlaced", {"order_id": str(uuid.uuid4()), "currency": "AUD", "details": details})


@pytest_asyncio.fixture(loop_scope="session")
async def stores(
    pool: asyncpg.Pool,
) -> AsyncIterator[list[tuple[EventStore, PersonalDataCodec, CountingKeys]]]:
    made = [writer(pool) for _ in range(6)]
    yield made
    for store, _, _ in made:
        await store.aclose()


def _key_ids(obj: Any, out: set[UUID]) -> set[UUID]:
    from ledger.privacy.cipher import TOKEN_MARK, token_key_id

    if isinstance(obj, str) and obj.startswith(TOKEN_MARK):
        key_id = token_key_id(obj)
        assert key_id is not None
        out.add(key_id)
    elif isinstance(obj, dict):
        for value in obj.values():
            _key_ids(value, out)
    elif isinstance(obj, list):
        for value in obj:
            _key_ids(value, out)
    return out


async def _personal_rows(pool: asyncpg.Pool, streams: Collection[str]) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT stream_id, version, type, data FROM events WHERE stream_id = ANY($1::text[])"
        " AND type = ANY($2::text[]) ORDER BY stream_id, version",
        list(streams),
        sorted(PERSONAL_EVENT_TYPES),
    )


async def test_a_new_subjects_first_order_stores_its_key_in_the_append_without_a_key_store_round_trip(
    pool: asyncpg.Pool, stores: list[tuple[EventStore, PersonalDataCodec, CountingKeys]]
) -> None:
    store, _, keys = stores[0]
    streams = [f"order-{uuid.uuid4()}" for _ in range(2)]
    for stream in streams:  # the second order finds the key in the cache
        await store.append(stream, [placed("profile-first")], NO_STREAM)
    assert keys.live_calls == 0
    stored = await pool.fetch("SELECT key_id FROM privacy_keys WHERE subject = 'profile:profile-first'")
    assert len(stored) == 1
    rows = await _personal_rows(pool, streams)
    assert set().union(*(_key_ids(r["data"], set()) for r in rows)) == {stored[0]["key_id"]}
    for stream in streams:
        [event] = await writer(pool)[0].read_stream(stream)
        assert event.data["details"]["customer"]["first_name"] == "Ottoline"


async def test_a_known_subject_new_to_a_process_gets_its_stored_key_from_the_append_that_lost(
    pool: asyncpg.Pool,
) -> None:
    first, _, _ = writer(pool)
    later, _, later_keys = writer(pool)  # another process, its cache cold
    streams = [f"order-{uuid.uuid4()}" for _ in range(3)]
    await first.append(streams[0], [placed("profile-known")], NO_STREAM)
    for stream in streams[1:]:
        await later.append(stream, [placed("profile-known")], NO_STREAM)
    assert later_keys.live_calls == 0  # the lost append's answer carried the stored key
    stored = await pool.fetch("SELECT key_id FROM privacy_keys WHERE subject = 'profile:profile-known'")
    assert len(stored) == 1
    rows = await _personal_rows(pool, streams)
    assert set().union(*(_key_ids(r["data"], set()) for r in rows)) == {stored[0]["key_id"]}
    await first.aclose()
    await later.aclose()


async def test_first_orders_of_one_subject_racing_in_several_processes_end_under_its_one_stored_key(
    pool: asyncpg.Pool, stores: list[tuple[EventStore, PersonalDataCodec, CountingKeys]]
) -> None:
    streams = [f"order-{uuid.uuid4()}" for _ in stores]
    await asyncio.gather(
        *(
            store.append(stream, [placed("profile-race")], NO_STREAM)
            for (store, _, _), stream in zip(stores, streams, strict=True)
        )
    )
    stored = await pool.fetch("SELECT key_id FROM privacy_keys WHERE subject = 'profile:profile-race'")
    assert len(stored) == 1  # the losers' keys were never stored
    rows = await _personal_rows(pool, streams)
    assert len(rows) == len(streams)
    assert set().union(*(_key_ids(r["data"], set()) for r in rows)) == {stored[0]["key_id"]}
    # Each process now uses the stored key: a second order per process seals under it too.
    more = [f"order-{uuid.uuid4()}" for _ in stores]
    for (store, _, _), stream in zip(stores, more, strict=True):
        await store.append(stream, [placed("profile-race")], NO_STREAM)
    assert set().union(*(_key_ids(r["data"], set()) for r in await _personal_rows(pool, more))) == {
        stored[0]["key_id"]
    }


async def test_an_erasure_racing_a_new_subjects_first_orders_leaves_no_order_unreported_once_erased_again(
    pool: asyncpg.Pool,
) -> None:
    made = [writer(pool, cache_s=0.0) for _ in range(4)]
    eraser_store, eraser_codec, eraser_keys = writer(pool)
    service = PrivacyService(pool, eraser_store, eraser_codec, eraser_keys)
    streams = [f"order-{uuid.uuid4()}" for _ in range(12)]

    async def place(i: int) -> None:
        store = made[i % len(made)][0]
        await asyncio.sleep(0.002 * i)
        await store.append(streams[i], [placed("profile-erase-race")], NO_STREAM)

    await store_first_then(made[0][0], streams[0])
    await asyncio.gather(
        service.erase("profile:profile-erase-race", requested_by="dpo", basis="request"),
        *(place(i) for i in range(1, len(streams))),
    )
    await service.erase("profile:profile-erase-race", requested_by="dpo", basis="request")
    live = await pool.fetchval(
        "SELECT count(*) FROM privacy_keys WHERE subject = 'profile:profile-erase-race' AND destroyed_at IS NULL"
    )
    assert live == 0
    for stream in streams:
        types = [r["type"] for r in await pool.fetch("SELECT type FROM events WHERE stream_id = $1 ORDER BY version", stream)]
        assert types[0] == "OrderPlaced"
        assert types[-1] == "PersonalDataErased", (stream, types)
        assert (await verify_stream(pool, stream)).ok
        [opened, *_] = await eraser_store.read_stream(stream)
        assert opened.data["details"]["customer"]["first_name"] is None
    for store, _, _ in [*made, (eraser_store, None, None)]:
        await store.aclose()


async def store_first_then(store: EventStore, stream: str) -> None:
    """The subject's first order, so the erasure has something to find when it starts."""
    await store.append(stream, [placed("profile-erase-race")], NO_STREAM)

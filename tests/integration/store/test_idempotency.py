"""Command idempotency keys: one effect per key, stored outcome replayed, reuse refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ledger.store import ANY, NO_STREAM, EventStore, IdempotencyKeyReused, IdempotencyRequest
from tests.integration.store.sample_events import new_stream, noted

pytestmark = pytest.mark.postgres


def request(key: str = "key-1", fingerprint: str = "fp-1", client: str = "shop-a") -> IdempotencyRequest:
    return IdempotencyRequest(client, key, fingerprint, {"status": 201, "version": 1, "body": {"ok": True}})


@pytest.mark.parametrize("expected", [NO_STREAM, ANY])
async def test_fifty_concurrent_identical_requests_append_once(store: EventStore, expected: int) -> None:
    stream = new_stream()
    results = await asyncio.gather(
        *(store.append(stream, [noted()], expected, idempotency=request()) for _ in range(50))
    )
    appended = [r for r in results if not r.replayed]
    replayed = [r for r in results if r.replayed]
    assert len(appended) == 1
    assert len(replayed) == 49
    assert all(r.outcome == {"status": 201, "version": 1, "body": {"ok": True}} for r in replayed)
    assert all(r.version == 1 for r in results)
    assert await store.stream_version(stream) == 1
    for _ in range(5):
        retry = await store.append(stream, [noted()], expected, idempotency=request())
        assert retry.replayed
        assert retry.outcome == replayed[0].outcome
    assert await store.pool.fetchval("SELECT count(*) FROM events") == 1


async def test_same_key_with_another_request_is_rejected(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, [noted()], NO_STREAM, idempotency=request())
    with pytest.raises(IdempotencyKeyReused) as raised:
        await store.append(stream, [noted()], 1, idempotency=request(fingerprint="fp-2"))
    assert (raised.value.client_id, raised.value.key) == ("shop-a", "key-1")
    with pytest.raises(IdempotencyKeyReused):
        await store.append(new_stream(), [noted()], NO_STREAM, idempotency=request(fingerprint="fp-2"))
    assert await store.stream_version(stream) == 1


async def test_concurrent_different_requests_under_one_key(store: EventStore) -> None:
    stream = new_stream()
    outcomes = await asyncio.gather(
        *(
            store.append(stream, [noted()], ANY, idempotency=request(fingerprint=f"fp-{i}"))
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, IdempotencyKeyReused) for o in outcomes if isinstance(o, BaseException))
    assert await store.stream_version(stream) == 1


async def test_keys_are_scoped_per_client(store: EventStore) -> None:
    stream = new_stream()
    first = await store.append(stream, [noted()], NO_STREAM, idempotency=request(client="shop-a"))
    second = await store.append(stream, [noted()], 1, idempotency=request(client="shop-b"))
    assert not first.replayed
    assert not second.replayed
    stored = await store.get_idempotency("shop-b", "key-1")
    assert stored is not None
    assert (stored.fingerprint, stored.stream_id, stored.outcome["version"]) == ("fp-1", stream, 1)
    assert await store.get_idempotency("shop-c", "key-1") is None


async def test_key_is_not_stored_when_the_append_fails(store: EventStore) -> None:
    stream = new_stream()
    await store.append(stream, [noted()], NO_STREAM)
    with pytest.raises(Exception, match="expected version 0"):
        await store.append(stream, [noted()], NO_STREAM, idempotency=request())
    assert await store.get_idempotency("shop-a", "key-1") is None


async def test_prune_removes_old_keys_only(store: EventStore) -> None:
    await store.append(new_stream(), [noted()], NO_STREAM, idempotency=request("old"))
    await store.append(new_stream(), [noted()], NO_STREAM, idempotency=request("new"))
    await store.pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '4 days' WHERE key = 'old'"
    )
    assert await store.prune_idempotency() == 1
    assert await store.get_idempotency("shop-a", "old") is None
    assert await store.get_idempotency("shop-a", "new") is not None
    assert await store.prune_idempotency(timedelta(0)) == 1

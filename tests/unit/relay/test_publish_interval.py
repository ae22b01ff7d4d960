"""`RelaySettings.publish_interval_ms`: while caught up, what arrives before the next allowed
publish joins it (fewer, larger record batches), and nothing waits past a stop or a failure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from ledger.relay.message import OutMessage
from ledger.relay.relay import _MORE, _gather
from ledger_kernel.settings import RelaySettings, Settings

Queue = asyncio.Queue[list[OutMessage] | BaseException | None]


def _records(first: int, count: int) -> list[OutMessage]:
    at = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)
    return [
        OutMessage(b"k", b"{}", [], at, 100, position, f"e{position}", "order-x", position)
        for position in range(first, first + count)
    ]


def _positions(messages: list[OutMessage]) -> list[int]:
    return [message.position for message in messages]


async def test_records_queued_before_the_next_publish_join_it_in_log_order() -> None:
    queue: Queue = asyncio.Queue(2)
    loop = asyncio.get_running_loop()

    async def reader() -> None:  # batches arrive one by one, more than the queue holds
        for first in range(3, 30, 3):
            await queue.put(_records(first, 3))

    feeding = asyncio.create_task(reader())
    messages, tail = await _gather(_records(0, 3), queue, loop.time() + 60, limit=30)
    await feeding
    assert _positions(messages) == list(range(30))
    assert tail is _MORE


async def test_no_wait_once_the_next_publish_is_due() -> None:
    queue: Queue = asyncio.Queue(2)
    await queue.put(_records(5, 1))
    messages, tail = await _gather(_records(0, 5), queue, asyncio.get_running_loop().time(), limit=100)
    assert _positions(messages) == list(range(5))
    assert tail is _MORE
    assert queue.qsize() == 1  # left for the publish after this one


async def test_a_full_batch_is_published_without_waiting_for_more() -> None:
    queue: Queue = asyncio.Queue(2)
    loop = asyncio.get_running_loop()
    await queue.put(_records(4, 4))
    messages, tail = await _gather(_records(0, 4), queue, loop.time() + 60, limit=8)
    assert _positions(messages) == list(range(8))
    assert tail is _MORE


async def test_a_stop_or_a_reader_failure_ends_the_wait_after_the_records_before_it() -> None:
    loop = asyncio.get_running_loop()
    for end in (None, RuntimeError("read failed")):
        queue: Queue = asyncio.Queue(2)
        await queue.put(_records(2, 2))
        await queue.put(end)
        messages, tail = await _gather(_records(0, 2), queue, loop.time() + 60, limit=100)
        assert _positions(messages) == list(range(4))
        assert tail is end


def test_the_interval_is_read_from_the_environment_and_never_negative(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_RELAY__PUBLISH_INTERVAL_MS", "7.5")
    assert Settings(_env_file=None).relay.publish_interval_ms == 7.5
    with pytest.raises(ValidationError):
        RelaySettings(publish_interval_ms=-1)

"""A request head past the limit gets a 431 problem over a real socket, not a connection reset."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest

from tests.e2e.api.conftest import LiveApi

pytestmark = pytest.mark.e2e


async def _raw_request(url: str, head: bytes) -> bytes:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 60)  # the server closes after answering
    finally:
        writer.close()


async def test_a_one_megabyte_header_is_answered_431_problem_json(live_api: LiveApi) -> None:
    big = b"x" * (1024 * 1024)
    head = b"GET /api/v3/orders HTTP/1.1\r\nHost: ledger\r\nX-Filler: " + big + b"\r\n\r\n"

    answer = await _raw_request(live_api.url, head)

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 431"), answer[:500]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in headers.lower()
    problem = json.loads(body)
    assert problem["status"] == 431
    assert problem["type"] == "urn:order-ledger:problem:header-too-large"


async def test_a_head_within_the_limit_is_served(live_api: LiveApi) -> None:
    response = await live_api.client.get("/healthz", headers={"X-Filler": "x" * 30_000})
    assert response.status_code == 200, response.text

"""Pure classification, Retry-After parsing and backoff: what the worker's decisions rest on."""

from __future__ import annotations

import email.utils
import random
from decimal import Decimal

import pytest

from consumers.http import (
    MAX_RETRY_AFTER_S,
    AuthFailure,
    Permanent,
    Retryable,
    Success,
    backoff_delay,
    classify_response,
    encode_json,
    parse_retry_after,
    strip_suffix,
)

NOW = 1_767_225_600.0


def test_retry_after_in_seconds_is_used_as_is() -> None:
    assert parse_retry_after({"Retry-After": "3"}, 503, NOW) == 3.0


def test_retry_after_as_http_date_becomes_seconds_from_now() -> None:
    date = email.utils.formatdate(NOW + 7, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, 429, NOW) == pytest.approx(7.0)


def test_retry_after_in_the_past_means_no_wait() -> None:
    date = email.utils.formatdate(NOW - 100, usegmt=True)
    assert parse_retry_after({"retry-after": date}, 429, NOW) == 0.0


def test_omnisend_reset_header_counts_only_on_429() -> None:
    headers = {"X-Rate-Limit-Reset": "42", "X-Rate-Limit-Remaining": "0"}
    assert parse_retry_after(headers, 429, NOW) == 42.0
    assert parse_retry_after(headers, 503, NOW) is None


def test_laravel_reset_timestamp_becomes_seconds() -> None:
    assert parse_retry_after({"X-RateLimit-Reset": str(int(NOW) + 30)}, 429, NOW) == 30.0


def test_garbage_or_absurd_retry_after_is_ignored_or_clamped() -> None:
    assert parse_retry_after({"Retry-After": "soon"}, 429, NOW) is None
    assert parse_retry_after({"Retry-After": "999999999"}, 429, NOW) == MAX_RETRY_AFTER_S
    assert parse_retry_after({}, 429, NOW) is None


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status: int) -> None:
    outcome = classify_response(status, {"Retry-After": "2"}, b'{"error":"x"}', now=NOW)
    assert isinstance(outcome, Retryable)
    assert outcome.status == status
    assert outcome.retry_after == 2.0
    assert outcome.body == {"error": "x"}


def test_server_errors_that_may_have_applied_the_call_are_ambiguous() -> None:
    def ambiguous(status: int) -> bool:
        outcome = classify_response(status, {}, b"")
        assert isinstance(outcome, Retryable)
        return outcome.ambiguous

    assert ambiguous(500)
    assert ambiguous(504)
    assert not ambiguous(503)
    assert not ambiguous(429)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "bad_request"),
        (404, "not_found"),
        (409, "conflict"),
        (413, "too_large"),
        (422, "validation"),
        (418, "unexpected_status"),
    ],
)
def test_client_errors_are_permanent_with_body_and_reason(status: int, reason: str) -> None:
    outcome = classify_response(status, {}, b'{"message":"bad"}')
    assert outcome == Permanent(status=status, reason=reason, body={"message": "bad"})  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_statuses_stop_the_destination(status: int) -> None:
    assert isinstance(classify_response(status, {}, b"{}"), AuthFailure)


def test_success_parses_json_and_accepts_an_empty_body() -> None:
    assert classify_response(200, {}, b'{"data":{"id":1}}') == Success(200, {"data": {"id": 1}})
    assert classify_response(204, {}, b"") == Success(204, None)


def test_a_2xx_with_garbage_or_too_large_is_an_ambiguous_failure() -> None:
    garbage = classify_response(200, {}, b"<html>oops")
    assert isinstance(garbage, Retryable)
    assert garbage.reason == "invalid_response"
    assert garbage.ambiguous
    huge = classify_response(200, {}, b"", truncated=True)
    assert isinstance(huge, Retryable)
    assert huge.reason == "response_too_large"


def test_non_json_error_bodies_are_kept_as_bounded_text() -> None:
    outcome = classify_response(500, {}, b"x" * 100_000)
    assert isinstance(outcome, Retryable)
    assert isinstance(outcome.body, str)
    assert len(outcome.body) == 4096


def test_backoff_grows_exponentially_within_the_cap_with_full_jitter() -> None:
    rng = random.Random(7)
    samples = [backoff_delay(n, initial_s=0.5, max_s=60, rng=rng) for n in range(1, 30) for _ in range(20)]
    assert all(0 <= s <= 60 for s in samples)
    first = [backoff_delay(1, initial_s=0.5, max_s=60, rng=rng) for _ in range(200)]
    assert max(first) <= 0.5
    late = [backoff_delay(12, initial_s=0.5, max_s=60, rng=rng) for _ in range(200)]
    assert max(late) > 30  # reaches toward the cap
    assert len({round(s, 6) for s in late}) > 150  # jittered, not lockstep


def test_backoff_never_retries_before_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(1, initial_s=0.5, max_s=60, retry_after=3.0, rng=rng) for _ in range(100)]
    assert min(delays) >= 3.0
    assert max(delays) <= 3.5


def test_decimals_are_sent_as_exact_json_numbers() -> None:
    assert encode_json({"total": Decimal("199.95")}) == b'{"total":199.95}'
    with pytest.raises(ValueError, match="exact"):
        encode_json({"total": Decimal("0.1000000000000000000001")})


def test_base_urls_are_accepted_with_or_without_the_version_prefix() -> None:
    assert strip_suffix("https://api.t.getomneo.com/api/v3/", "/api/v3") == "https://api.t.getomneo.com"
    assert strip_suffix("http://127.0.0.1:9", "/v3") == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({"Retry-After": "30"}, b'{"error": "Forbidden"}'),
        ({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "12"}, b'{"error": "Forbidden"}'),
        ({}, b'{"error": "blocked due to many errors in a particular time"}'),
    ],
)
def test_a_403_with_a_rate_limit_signature_is_retried_later_not_a_halt(
    headers: dict[str, str], body: bytes
) -> None:
    outcome = classify_response(403, headers, body, now=0.0)
    assert isinstance(outcome, Retryable)
    assert outcome.status == 403


def test_a_plain_403_is_an_auth_failure() -> None:
    outcome = classify_response(403, {"X-Rate-Limit-Remaining": "57"}, b'{"error": "Forbidden"}', now=0.0)
    assert isinstance(outcome, AuthFailure)

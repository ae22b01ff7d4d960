"""The topic side's per-order bookkeeping: re-sent duplicates are not gaps, a skipped version is
missing, a late one is out of order, and only messages of the range count."""

from __future__ import annotations

import orjson

from ledger_app.reconcile.kafka import TopicScan


def _scan(*versions: int) -> TopicScan:
    scan = TopicScan("t")
    for version in versions:
        scan.add("o", version)
    return scan


def test_a_republished_run_is_counted_as_duplicates_not_as_a_gap_or_a_late_version() -> None:
    seen = _scan(1, 2, 3, 2, 3, 4).order("o")
    assert seen is not None
    assert seen.duplicates == 2
    assert seen.late == 0
    assert seen.missing(1, 4) == []


def test_versions_never_seen_are_listed_as_runs() -> None:
    seen = _scan(1, 3, 6).order("o")
    assert seen is not None
    assert seen.missing(1, 7) == [(2, 2), (4, 5), (7, 7)]
    assert seen.late == 0


def test_a_version_that_came_after_a_later_one_is_late_and_not_missing() -> None:
    seen = _scan(2, 1, 3).order("o")
    assert seen is not None
    assert seen.late == 1
    assert seen.missing(1, 3) == []


def test_only_envelopes_within_the_range_count_and_garbage_is_counted_as_unreadable() -> None:
    scan = TopicScan("t")
    for position, version in ((5, 1), (9, 2), (12, 3)):
        scan.take(orjson.dumps({"order_id": "o", "version": version, "position": position}), 6, 12)
    scan.take(b"not json", 6, 12)
    scan.take(orjson.dumps({"order_id": "o", "version": "2", "position": 7}), 6, 12)
    assert scan.in_range == 2
    assert scan.unreadable == 2
    seen = scan.order("o")
    assert seen is not None
    assert seen.missing(2, 3) == []
    assert seen.missing(1, 1) == [(1, 1)]

"""`relaxed_gc` raises the collector's thresholds for a bulk read and puts them back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ledger.store.gc_tuning import BULK_THRESHOLDS, relaxed_gc


@pytest.fixture(autouse=True)
def _known_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_thresholds_are_raised_inside_and_restored_after() -> None:
    with relaxed_gc():
        assert gc.get_threshold() == BULK_THRESHOLDS
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_blocks_restore_only_when_the_last_one_leaves() -> None:
    first, second = relaxed_gc(), relaxed_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold() == BULK_THRESHOLDS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_thresholds_are_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), relaxed_gc():
        raise RuntimeError("replay failed")
    assert gc.get_threshold() == (700, 10, 10)

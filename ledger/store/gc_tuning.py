"""Relaxed garbage collection for bulk reads of the log.

A replay allocates several container objects per event (asyncpg's record, the `RecordedEvent`
tuple, the data and metadata dicts, the bound method asyncpg's timestamptz decoder makes), and
every container allocation counts towards CPython's gen0 threshold (700) even when the object
is never tracked: with the default thresholds a collection runs about every hundred events while
pages of 10,000 records are alive, so young collections keep promoting them and full
collections keep scanning them. Measured (py-spy --native, 450,000 events, `iter_all`):
`gc_collect_main` took 37% of the reader's samples; the client CPU per event was 7.0-7.7 us
with the defaults against 3.2-4.0 us with a gen0 threshold of 50,000 (`iter_all_raw`: 2.9-3.1
against 1.8-1.9). Collection of cyclic garbage is only delayed: at most 50,000 container
allocations' worth accumulates before a collection.

`relaxed_gc()` is opt-in and process-wide (the thresholds are global): use it around a bulk
replay in a process that does little else (a rebuild, a bench), not inside a request handler.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Thresholds for bulk reads: a young collection every 50,000 container allocations.
BULK_THRESHOLDS = (50_000, 20, 100)

_depth = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def relaxed_gc(thresholds: tuple[int, int, int] = BULK_THRESHOLDS) -> Iterator[None]:
    """Raise the collector's thresholds for the block; the outermost block restores them.

    Nested or overlapping blocks (two replays in one event loop) share one setting: the first
    to enter saves the process's thresholds and the last to leave puts them back.
    """
    global _depth, _saved  # noqa: PLW0603 - one process-wide setting, like gc's own
    if _depth == 0:
        _saved = gc.get_threshold()
        gc.set_threshold(*thresholds)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None

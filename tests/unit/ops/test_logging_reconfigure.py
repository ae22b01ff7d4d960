"""Logging configured twice in one process still reaches loggers cached by the first call."""

from __future__ import annotations

import structlog

from ledger_kernel.observability import configure_logging
from ledger_kernel.observability.logs import get_logger


def test_a_logger_cached_before_a_second_configure_follows_the_new_processors() -> None:
    log = get_logger("tests.reconfigure")
    configure_logging(json=True)
    log.info("cached on first use")
    configure_logging(json=True)  # e.g. a second CLI command run in the same process
    with structlog.testing.capture_logs() as captured:
        log.info("after the second configure", order_id="o-1")
    assert captured == [{"event": "after the second configure", "order_id": "o-1", "log_level": "info"}]

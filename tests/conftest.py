"""Real services for every tier: see tests/harness/ for how each one is chosen."""

import os

# Hypothesis imports these lazily, inside a running @given test, where pytest's assertion
# rewriter compiles them while Hypothesis has raised the recursion limit. On CPython 3.11.7
# that compile can fail with "SystemError: AST constructor recursion depth mismatch" (seen
# once in CI, as a flaky failure). Importing them at collection keeps compile out of tests.
import hypothesis.internal.conjecture.optimiser
import hypothesis.strategies._internal.random  # noqa: F401
import pytest
from hypothesis import HealthCheck, settings

# The suite is a gate, so by default every run draws the same examples: a failure in CI is a
# failure on every machine, never a roll of the dice. `LEDGER_HYPOTHESIS_PROFILE=explore`
# draws fresh ones (and keeps what fails in .hypothesis/) when hunting for new bugs.
_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("deterministic", derandomize=True, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("explore", deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("LEDGER_HYPOTHESIS_PROFILE", "deterministic"))

pytest_plugins = ["tests.harness.postgres", "tests.harness.kafka"]

#: `record_property(FAULT_COUNTS, line)` in a fault tier puts `line` in the run's summary.
FAULT_COUNTS = "fault-tier-counts"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print what the fault tiers counted (orders, events, kills, anomalies), passed or not:
    the figures are the evidence, not only the verdict. Reports carry them from xdist workers."""
    lines = [
        str(value)
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", ())
        if name == FAULT_COUNTS and getattr(report, "when", "call") == "call"
    ]
    if lines:
        terminalreporter.section("fault tier counts")
        for line in lines:
            terminalreporter.write_line(line)

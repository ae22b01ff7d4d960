"""Real services for every tier: see tests/harness/ for how each one is chosen."""

# Hypothesis imports these lazily, inside a running @given test, where pytest's assertion
# rewriter compiles them while Hypothesis has raised the recursion limit. On CPython 3.11.7
# that compile can fail with "SystemError: AST constructor recursion depth mismatch" (seen
# once in CI, as a flaky failure). Importing them at collection keeps compile out of tests.
import hypothesis.internal.conjecture.optimiser
import hypothesis.strategies._internal.random  # noqa: F401

pytest_plugins = ["tests.harness.postgres", "tests.harness.kafka"]

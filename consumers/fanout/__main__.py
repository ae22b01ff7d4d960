"""`python -m consumers.fanout omneo|omnisend [--metrics-port N]`: one destination's worker."""

from __future__ import annotations

import argparse
import sys

from consumers.fanout.worker import main
from ledger_kernel.observability import configure_logging
from ledger_kernel.settings import Settings


def _cli() -> int:
    parser = argparse.ArgumentParser(prog="python -m consumers.fanout")
    parser.add_argument("destination", choices=["omneo", "omnisend"])
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args()
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return main(args.destination, settings, metrics_port=args.metrics_port)


if __name__ == "__main__":
    sys.exit(_cli())

"""`python -m ledger.relay`: see `ledger.relay.cli`."""

from ledger.relay.cli import main

main()

"""Kafka relay: publishes the fenced event log on `orders.events` (docs/architecture.md#relay).

Entry points: `run_relay` (library), `python -m ledger.relay` (process), and the typer
function `ledger.relay.cli.relay` (the `ledger relay` verb).
"""

from ledger.relay.message import OutMessage, build_message
from ledger.relay.publisher import KafkaPublisher, RelayConfigError, producer_options
from ledger.relay.relay import Relay, checkpoint_name, run_relay
from ledger_kernel.wire.codec import dumps_canonical

__all__ = [
    "KafkaPublisher",
    "OutMessage",
    "Relay",
    "RelayConfigError",
    "build_message",
    "checkpoint_name",
    "dumps_canonical",
    "producer_options",
    "run_relay",
]

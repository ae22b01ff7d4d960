"""A comma-separated broker list reaches FastStream as one host per item."""

from __future__ import annotations

from ledger_kernel.settings import Settings


def test_a_comma_separated_bootstrap_list_becomes_one_host_per_item() -> None:
    settings = Settings(database_url="postgresql://x/y", kafka_bootstrap_servers="k1:9092, k2:9092,k3:9092,")

    assert settings.bootstrap_server_list == ["k1:9092", "k2:9092", "k3:9092"]

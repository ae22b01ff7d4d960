"""A three-node Apache Kafka cluster per test of this tier (see test_cluster_failover.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger_app.dev.apache_kafka import KraftCluster


@pytest.fixture
def cluster() -> Iterator[KraftCluster]:
    """Three nodes, replication 3, two in-sync replicas required, no unclean leader election."""
    overrides = {
        "min.insync.replicas": "2",
        "unclean.leader.election.enable": "false",
        "replica.lag.time.max.ms": "10000",
    }
    with KraftCluster(size=3, heap_mb=256, overrides=overrides) as started:
        yield started

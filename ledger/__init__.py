"""Order ledger: the write side (domain, event store, HTTP API, Kafka intake and relay)."""

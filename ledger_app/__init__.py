"""The composition root: the `ledger` CLI, `ledger dev`, and the wiring of packages into processes.

The top floor of the house (docs/architecture.md#layers): it imports the write side (`ledger`),
the read side (`projections`), the integrations (`consumers`) and the kernel, and nothing
imports it. Each process verb builds its settings once here and hands them down.
"""

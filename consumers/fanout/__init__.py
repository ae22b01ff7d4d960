"""Fan-out workers: deliver `orders.events` to Omneo and Omnisend (docs/architecture.md#fanout).

Modules: `envelope` (what is read, what mappings return), `state` (delivery state, inbox,
park queue in Postgres), `budget` (rate budget + retries), `destinations` (per-vendor
adapters), `delivery` (one order's delivery: inbox, parking, crash safety), `worker`
(FastStream app, `run_worker`), `operations` (redrive, replay). Imports stay lazy here so
the pure mappings can be used without Kafka or Postgres.
"""

-- The rate budget of one destination, shared by every process that calls it (worker replicas,
-- `ledger fanout redrive` / `replay`): F13, DESIGN §8. Owned by consumers/fanout/budget.py.
-- next_free_at: the GCRA "theoretical arrival time"; each call advances it by 60 s / rate.
-- open_at: a vendor's rate-limit reset (429 Retry-After) closes the gate for everyone until then.
CREATE TABLE fanout_rate_budget (
    destination   text        PRIMARY KEY,
    next_free_at  timestamptz NOT NULL,
    open_at       timestamptz NOT NULL DEFAULT '-infinity',
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Fan-out delivery state per (destination, order), the inbox of handled events, the park queue
-- and destination halts (DESIGN §8). Owned by consumers/fanout.

-- What a destination already has for one order. `sent` holds digests of what was delivered
-- (per Omneo field group / transaction, per Omnisend body) so unchanged records are not re-sent.
-- status 'creating': an Omneo order create was started and its outcome is not recorded yet
-- (the intent is written BEFORE the POST, so a crash never leads to a blind second create).
CREATE TABLE fanout_delivery (
    destination       text        NOT NULL,
    order_id          text        NOT NULL,
    remote_id         text,
    remote_exists     boolean     NOT NULL DEFAULT false,
    status            text        NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'creating')),
    last_version      integer     NOT NULL DEFAULT 0,
    last_position     bigint      NOT NULL DEFAULT 0,
    sent              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, order_id)
);

-- One row per (destination, event) handled, written in the same transaction as the delivery
-- state, so a redelivered event causes no second effect.
CREATE TABLE fanout_inbox (
    destination   text        NOT NULL,
    event_id      text        NOT NULL,
    order_id      text        NOT NULL,
    version       integer     NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('delivered', 'coalesced', 'noop', 'stale', 'replayed')),
    calls         integer     NOT NULL DEFAULT 0,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, event_id)
);
CREATE INDEX fanout_inbox_order ON fanout_inbox (destination, order_id, version);

-- Events of parked orders, in order. The head (lowest version) carries the reason; later events
-- of the same order wait behind it ('waiting'). Their Kafka offsets are committed: this table
-- is the queue until `ledger fanout redrive`.
CREATE TABLE fanout_parked (
    destination   text        NOT NULL,
    event_id      text        NOT NULL,
    order_id      text        NOT NULL,
    version       integer     NOT NULL,
    position      bigint      NOT NULL,
    envelope      bytea       NOT NULL,
    reason        text        NOT NULL,
    detail        jsonb,
    attempts      integer     NOT NULL DEFAULT 0,
    parked_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination, event_id)
);
CREATE INDEX fanout_parked_order ON fanout_parked (destination, order_id, version);

-- A destination stopped on an auth failure (401/403), for operators (`ledger fanout parked`);
-- a worker started again (after the credential fix) clears it.
CREATE TABLE fanout_halts (
    destination   text        PRIMARY KEY,
    status        integer,
    reason        text        NOT NULL,
    detail        jsonb,
    halted_at     timestamptz NOT NULL DEFAULT now()
);

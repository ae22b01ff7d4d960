-- Command idempotency keys, scoped by client, written in the same transaction as the events.
CREATE TABLE idempotency_keys (
    client_id   text        NOT NULL,
    key         text        NOT NULL,
    fingerprint text        NOT NULL,
    outcome     jsonb       NOT NULL,
    stream_id   text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (client_id, key)
);

-- Pruning deletes by age.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

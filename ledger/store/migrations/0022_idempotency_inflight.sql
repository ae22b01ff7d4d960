-- Idempotency keys whose first request is still being handled (IETF draft: 409 while in
-- flight). A row is claimed before the command is decided and deleted when it is answered;
-- the stored outcome itself lives in idempotency_keys, written with the events.
--
-- UNLOGGED: after a crash the table is empty, which is exactly right (nothing is in flight).
-- A claim older than the service's stale timeout is taken over, so a killed process never
-- blocks a key for longer than that.
CREATE UNLOGGED TABLE idempotency_inflight (
    client_id   text        NOT NULL,
    key         text        NOT NULL,
    claim_id    uuid        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT idempotency_inflight_pkey PRIMARY KEY (client_id, key)
);

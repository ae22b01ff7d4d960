-- Bearer tokens of the HTTP API. Only a SHA-256 of the token is stored: tokens are 256-bit
-- random strings, so a fast hash is enough (no password-style KDF needed) and a leaked table
-- cannot be replayed. `client_id` scopes idempotency keys; `name` is the principal recorded as
-- the actor of every event the token writes.
CREATE TABLE api_tokens (
    token_id    uuid        NOT NULL,
    name        text        NOT NULL,
    client_id   text        NOT NULL,
    token_hash  bytea       NOT NULL,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    revoked_at  timestamptz,
    CONSTRAINT api_tokens_pkey PRIMARY KEY (token_id),
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_scopes_check CHECK (scopes <@ ARRAY['orders:write', 'orders:read', 'audit:read', 'admin']::text[])
);

-- Personal data (docs/privacy.md): per-subject data keys, wrapped by the key-encryption key
-- from settings, and the index from orders and lookups to their data subject.
--
-- A subject's key is destroyed by setting `wrapped` to NULL (crypto-shredding): the row stays
-- as the record of when and why. At most one live key per subject; writes after an erasure
-- get a new key (a new generation), so new orders of the same person stay readable.
CREATE TABLE privacy_keys (
    key_id       uuid        NOT NULL,
    subject      text        NOT NULL,
    wrapped      bytea,
    kek_id       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    destroyed_at timestamptz,
    erased_by    text,
    basis        text,
    CONSTRAINT privacy_keys_pkey PRIMARY KEY (key_id),
    CONSTRAINT privacy_keys_destroyed CHECK ((wrapped IS NULL) = (destroyed_at IS NOT NULL))
);
CREATE UNIQUE INDEX privacy_keys_live ON privacy_keys (subject) WHERE destroyed_at IS NULL;
CREATE INDEX privacy_keys_subject ON privacy_keys (subject);

-- Which subject an order belongs to (fixed by its first event), and the keyed blind index
-- (HMAC-SHA256) of the customer email it carries, so an erasure by email finds every order.
CREATE TABLE privacy_orders (
    stream_id  text        NOT NULL,
    subject    text        NOT NULL,
    email_hmac text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT privacy_orders_pkey PRIMARY KEY (stream_id)
);
CREATE INDEX privacy_orders_subject ON privacy_orders (subject);
CREATE INDEX privacy_orders_email ON privacy_orders (email_hmac) WHERE email_hmac IS NOT NULL;

-- What each erasure did, per place, for the erasure report (no personal data: the subject is
-- a profile id, an email's HMAC or an order id).
CREATE TABLE privacy_erasures (
    erasure_id   uuid        NOT NULL,
    subject      text        NOT NULL,
    requested_by text        NOT NULL,
    basis        text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    streams      text[]      NOT NULL,
    CONSTRAINT privacy_erasures_pkey PRIMARY KEY (erasure_id)
);
CREATE INDEX privacy_erasures_subject ON privacy_erasures (subject, requested_at);

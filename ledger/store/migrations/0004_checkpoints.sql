-- Reader checkpoints in the fenced global log (relay, projections). A reader saves its
-- checkpoint in the same transaction as its effects.
CREATE TABLE checkpoints (
    name        text        NOT NULL,
    tx          xid8        NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT checkpoints_pkey PRIMARY KEY (name)
);

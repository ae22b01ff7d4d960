-- End offsets the broker acknowledged to the relay, per partition of its topic, saved with the
-- relay's checkpoint (same statement). Records below them must be on the broker: when it holds
-- less (a topic lost, re-created, truncated), the relay stops instead of publishing on.
-- `ledger relay republish` replaces them with what the broker holds after re-publishing.
CREATE TABLE relay_offsets (
    name        text        NOT NULL,
    partition   integer     NOT NULL,
    end_offset  bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT relay_offsets_pkey PRIMARY KEY (name, partition)
);

-- The event log. Position orders the log only together with tx (see ledger/store/reads.py):
-- positions are handed out at insert but become visible at commit.
CREATE TABLE events (
    position        bigint      GENERATED ALWAYS AS IDENTITY,
    tx              xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    version         integer     NOT NULL CHECK (version > 0),
    event_id        uuid        NOT NULL,
    type            text        NOT NULL,
    schema_version  smallint    NOT NULL CHECK (schema_version > 0),
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    prev_hash       bytea,
    hash            bytea       NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- The fenced global log is read in (tx, position) order.
CREATE INDEX events_tx_position_idx ON events (tx, position);

-- Temporal and audit reads filter on recorded_at, which grows with position: a BRIN index
-- costs almost nothing on the append path (a B-tree would be a fifth index to maintain).
CREATE INDEX events_recorded_at_brin ON events USING brin (recorded_at);

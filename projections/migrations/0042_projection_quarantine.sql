-- Orders a projection version could not apply (projections/quarantine.py).
--
-- An event the runner cannot fold, or whose rows the database refuses, must not stop the read
-- model for every other order: the runner records the order here (with the first event it
-- could not apply and the error), keeps the order's last good rows (marked stale to readers)
-- and lets the rest of the log flow. Later events of a quarantined order are skipped until it
-- is folded again from the whole stream: on the runner's next start, or on request
-- (`ledger projections refold`, which sets retry_requested). Rows belong to one version: a new
-- version is built from the log and records its own.
CREATE TABLE projection_quarantine (
    projection      text        NOT NULL,
    version         integer     NOT NULL,
    stream_id       text        NOT NULL,
    event_version   integer     NOT NULL,
    position        bigint,
    error           text        NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    retry_requested boolean     NOT NULL DEFAULT false,
    CONSTRAINT projection_quarantine_pkey PRIMARY KEY (projection, version, stream_id)
);

-- The API asks, per order, whether any live read model is stale for it.
CREATE INDEX projection_quarantine_stream ON projection_quarantine (stream_id);

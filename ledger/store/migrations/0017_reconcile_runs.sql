-- Reconciliation runs (`ledger audit reconcile`, ledger_app/reconcile): what a run compared the
-- log with, how far it got (so an interrupted run resumes), what it counted per place, and the
-- mismatches it found. Owned by ledger_app/reconcile/runs.py.
CREATE TABLE reconcile_runs (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at      timestamptz,
    status           text        NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'finished', 'failed')),
    from_position    bigint      NOT NULL,
    to_position      bigint      NOT NULL,
    -- Every order whose last event in the range is at or below this position was checked.
    checked_through  bigint      NOT NULL,
    counts           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    mismatch_count   bigint      NOT NULL DEFAULT 0,
    error            text
);

-- The mismatches of a run (the first `max_stored` of them; `mismatch_count` counts them all).
CREATE TABLE reconcile_mismatches (
    run_id    bigint  NOT NULL REFERENCES reconcile_runs (id) ON DELETE CASCADE,
    seq       integer NOT NULL,
    kind      text    NOT NULL,
    place     text    NOT NULL,
    order_id  text    NOT NULL,
    detail    text    NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Projection bookkeeping (projections/registry.py). Read-model tables themselves are created
-- by the projections package per version (order_state_v{n}, order_lines_v{n}, transactions_v{n})
-- because their DDL belongs to the projection code that fills them; readers use the views
-- named after the projection, which a swap redefines in one transaction.
--
-- projection_versions: one row per (projection, version) ever built, with the hash of the code
-- that built it. A deploy whose code hash differs under an unchanged version is refused.
-- status: 'building' (rebuild in progress), 'ready' (built, verified, not live),
-- 'live', 'previous' (the version a rollback returns to), 'retired', 'failed' (verification
-- refused the swap; tables kept for inspection).
CREATE TABLE projection_versions (
    projection  text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    code_hash   text        NOT NULL,
    status      text        NOT NULL
                CHECK (status IN ('building', 'ready', 'live', 'previous', 'retired', 'failed')),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    report      jsonb,
    CONSTRAINT projection_versions_pkey PRIMARY KEY (projection, version)
);

-- At most one live version per projection; the views always point at it.
CREATE UNIQUE INDEX projection_versions_one_live ON projection_versions (projection)
    WHERE status = 'live';

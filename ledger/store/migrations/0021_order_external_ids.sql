-- A producer's external_id names at most one order per source (DESIGN §5: a second order with
-- the same external_id from the same source is a 409 pointing at the first).
--
-- The row is written by a trigger on the events insert, so it commits or rolls back with the
-- OrderPlaced event itself: no window where two concurrent placements both pass a pre-check.
-- The violation is raised with the custom SQLSTATE 'LX409' (and the existing stream id in
-- DETAIL) so the service can tell it from the store's own unique violations.
CREATE TABLE order_external_ids (
    source      text        NOT NULL,
    external_id text        NOT NULL,
    stream_id   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT order_external_ids_pkey PRIMARY KEY (source, external_id)
);

CREATE FUNCTION ledger_claim_external_id() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_source   text := coalesce(nullif(NEW.data->>'source', ''), '');
    v_external text := nullif(NEW.data->>'external_id', '');
    v_existing text;
BEGIN
    IF v_external IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO order_external_ids (source, external_id, stream_id)
    VALUES (v_source, v_external, NEW.stream_id)
    ON CONFLICT (source, external_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT stream_id INTO v_existing FROM order_external_ids
         WHERE source = v_source AND external_id = v_external;
        IF v_existing IS DISTINCT FROM NEW.stream_id THEN
            RAISE EXCEPTION 'external_id % of source % already belongs to %', v_external, v_source, v_existing
                USING ERRCODE = 'LX409', DETAIL = v_existing;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_claim_external_id
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.type = 'OrderPlaced')
    EXECUTE FUNCTION ledger_claim_external_id();

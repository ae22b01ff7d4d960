-- The log is append-only: updates, deletes and truncation are refused. Maintenance that really
-- must rewrite history runs with `SET session_replication_role = replica`, which skips these
-- triggers, and leaves the hash chain to show what was touched.
CREATE FUNCTION ledger_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_no_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only();

-- The two CHECK constraints of `events` (version > 0, schema_version > 0) cost a fifth of a
-- single-row append on the server: PostgreSQL re-reads and compiles CHECK expressions from
-- their stored text for every INSERT statement (counted with callgrind: about 26,000
-- instructions per append, out of about 120,000 for the bare INSERT). Both values are never
-- written by hand: versions are `current + 1` in both append paths (`ledger_append` and the
-- single-statement fast path, ledger/store/statements.py), and schema versions come from the
-- event registry, which only accepts positive ints (ledger/store/registry.py). The unique key
-- on (stream_id, version) and the NOT NULLs stay.
ALTER TABLE events
    DROP CONSTRAINT events_version_check,
    DROP CONSTRAINT events_schema_version_check;

-- One round trip per append: version read, expected-version check, idempotency key, hash chain
-- and the event rows, all in one function call (one implicit transaction).
--
-- Ordering subtlety: a transaction's xid (the `tx` column) is taken at its first write. Nothing
-- here writes before the stream's current version has been read, so an append that sees
-- version v got its xid after the append that wrote v committed: within a stream, (tx, position)
-- order equals version order, which the relay and projections rely on.
--
-- Statuses: 'appended'; 'replayed' (same idempotency key and fingerprint: r_outcome is the
-- stored outcome, nothing written); 'key_reused' (same key, other fingerprint); 'conflict'
-- (r_version is the current version). Concurrent duplicates surface as unique violations,
-- which the Python side resolves (ledger/store/append.py).
--
-- p_expected: >= 0 exact version (0 = no stream), -1 any, -2 stream must exist.
-- Hash: sha256(prev_hash || utf8(stream_id \n version \n event_id \n type \n schema_version \n
-- data::text \n metadata::text)), using jsonb's canonical text, so `ledger audit verify` can
-- recompute it from stored rows (ledger/store/chain.py).
CREATE FUNCTION ledger_append(
    p_stream_id        text,
    p_expected         bigint,
    p_event_ids        uuid[],
    p_types            text[],
    p_schema_versions  smallint[],
    p_data             text[],
    p_metadata         text[],
    p_idem_client      text,
    p_idem_key         text,
    p_idem_fingerprint text,
    p_idem_outcome     text,
    OUT r_status       text,
    OUT r_version      integer,
    OUT r_positions    bigint[],
    OUT r_tx           xid8,
    OUT r_outcome      jsonb
)
LANGUAGE plpgsql AS $$
DECLARE
    v_current   integer;
    v_hash      bytea;
    v_n         integer := cardinality(p_event_ids);
    v_data      jsonb[] := '{}';
    v_meta      jsonb[] := '{}';
    v_prevs     bytea[] := '{}';
    v_hashes    bytea[] := '{}';
    v_fp        text;
    v_outcome   jsonb;
BEGIN
    IF p_idem_key IS NOT NULL THEN
        SELECT k.fingerprint, k.outcome INTO v_fp, v_outcome
          FROM idempotency_keys k
         WHERE k.client_id = p_idem_client AND k.key = p_idem_key;
        IF FOUND THEN
            r_status := CASE WHEN v_fp = p_idem_fingerprint THEN 'replayed' ELSE 'key_reused' END;
            r_outcome := v_outcome;
            RETURN;
        END IF;
    END IF;

    -- ANY / STREAM_EXISTS appenders to one stream queue on a transaction-scoped advisory lock
    -- instead of failing on the version key and retrying. Taking the lock writes nothing, so
    -- the xid is still taken after the read.
    IF p_expected < 0 THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_stream_id, 0));
    END IF;

    -- Read before any write (see the ordering note above).
    SELECT e.version, e.hash INTO v_current, v_hash
      FROM events e
     WHERE e.stream_id = p_stream_id
     ORDER BY e.version DESC
     LIMIT 1;
    v_current := coalesce(v_current, 0);

    IF (p_expected >= 0 AND v_current <> p_expected) OR (p_expected = -2 AND v_current = 0) THEN
        r_status := 'conflict';
        r_version := v_current;
        RETURN;
    END IF;

    IF p_idem_key IS NOT NULL THEN
        -- A concurrent duplicate waits here on the primary key until the first commits, then
        -- fails with a unique violation and reads the stored outcome.
        INSERT INTO idempotency_keys (client_id, key, fingerprint, outcome, stream_id)
        VALUES (p_idem_client, p_idem_key, p_idem_fingerprint, p_idem_outcome::jsonb, p_stream_id);
    END IF;

    IF v_n = 1 THEN
        -- The common case, without arrays: one INSERT ... VALUES.
        v_data[1] := p_data[1]::jsonb;
        v_meta[1] := p_metadata[1]::jsonb;
        INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata, prev_hash, hash)
        VALUES (p_stream_id, v_current + 1, p_event_ids[1], p_types[1], p_schema_versions[1], v_data[1],
                v_meta[1], v_hash,
                sha256(coalesce(v_hash, ''::bytea) || convert_to(concat_ws(E'\n',
                    p_stream_id, (v_current + 1)::text, p_event_ids[1]::text, p_types[1],
                    p_schema_versions[1]::text, v_data[1]::text, v_meta[1]::text), 'UTF8')))
        RETURNING ARRAY[position] INTO r_positions;
    ELSE
        FOR i IN 1 .. v_n LOOP
            v_data[i] := p_data[i]::jsonb;
            v_meta[i] := p_metadata[i]::jsonb;
            v_prevs[i] := v_hash;
            v_hash := sha256(coalesce(v_hash, ''::bytea) || convert_to(concat_ws(E'\n',
                        p_stream_id, (v_current + i)::text, p_event_ids[i]::text, p_types[i],
                        p_schema_versions[i]::text, v_data[i]::text, v_meta[i]::text), 'UTF8'));
            v_hashes[i] := v_hash;
        END LOOP;

        WITH ins AS (
            INSERT INTO events (stream_id, version, event_id, type, schema_version, data, metadata, prev_hash, hash)
            SELECT p_stream_id, v_current + u.ord::integer, u.event_id, u.type, u.schema_version,
                   u.data, u.metadata, u.prev_hash, u.hash
              FROM unnest(p_event_ids, p_types, p_schema_versions, v_data, v_meta, v_prevs, v_hashes)
                   WITH ORDINALITY AS u(event_id, type, schema_version, data, metadata, prev_hash, hash, ord)
             ORDER BY u.ord
            RETURNING position
        )
        SELECT array_agg(ins.position ORDER BY ins.position) INTO r_positions FROM ins;
    END IF;

    r_status := 'appended';
    r_version := v_current + v_n;
    r_tx := pg_current_xact_id();
END
$$;

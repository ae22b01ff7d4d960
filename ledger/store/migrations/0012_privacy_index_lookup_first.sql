-- The order-to-subject index trigger (0011) looks before it writes. Every personal event names
-- its subject, so an order's later details changes found their row already there, and
-- `INSERT ... ON CONFLICT DO UPDATE ... WHERE` locks the conflicting row even when its WHERE
-- is false: a tuple lock (a heap write and a WAL record) per details change, for nothing. A
-- primary-key lookup first skips that; a missing row or a new email takes the old path.
CREATE OR REPLACE FUNCTION ledger_privacy_index() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    subject_ text := NEW.metadata->>'pd_subject';
    email_ text := NEW.metadata->>'pd_email';
BEGIN
    PERFORM FROM privacy_orders p
     WHERE p.stream_id = NEW.stream_id AND p.subject = subject_
       AND (email_ IS NULL OR p.email_hmac = email_);
    IF FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO privacy_orders AS p (stream_id, subject, email_hmac)
    VALUES (NEW.stream_id, subject_, email_)
    ON CONFLICT (stream_id, subject) DO UPDATE SET email_hmac = coalesce(excluded.email_hmac, p.email_hmac)
        WHERE p.email_hmac IS DISTINCT FROM coalesce(excluded.email_hmac, p.email_hmac);
    RETURN NULL;
END
$$;

-- The order-to-subject index is written by the append itself (docs/privacy.md#keys): the codec
-- names each personal event's subject and email blind index in its metadata (`pd_subject`,
-- `pd_email`), and this trigger records them in the append's transaction. No extra round trip
-- per new order, and no index row without its event (nor an event without its row).
-- An order may hold several subjects (its email changed): one row per (order, subject).
ALTER TABLE privacy_orders DROP CONSTRAINT privacy_orders_pkey;
ALTER TABLE privacy_orders ADD CONSTRAINT privacy_orders_pkey PRIMARY KEY (stream_id, subject);

CREATE FUNCTION ledger_privacy_index() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO privacy_orders AS p (stream_id, subject, email_hmac)
    VALUES (NEW.stream_id, NEW.metadata->>'pd_subject', NEW.metadata->>'pd_email')
    ON CONFLICT (stream_id, subject) DO UPDATE SET email_hmac = coalesce(excluded.email_hmac, p.email_hmac)
        WHERE p.email_hmac IS DISTINCT FROM coalesce(excluded.email_hmac, p.email_hmac);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_privacy_index AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.metadata ? 'pd_subject') EXECUTE FUNCTION ledger_privacy_index();

-- The order-to-subject index is read from the events themselves (docs/privacy.md#keys). Every
-- personal event names its subject and its email's blind index in its metadata (`pd_subject`,
-- `pd_email`), so two partial expression indexes on `events` find an order's subjects and a
-- subject's (or an email's) orders. Migration 0011's trigger copied them into a table instead:
-- a PL/pgSQL call and an `INSERT ... ON CONFLICT` (a heap row, three index entries, and a tuple
-- lock on every later details change) per personal event, measured with EXPLAIN ANALYZE at
-- about 60 to 75 us of an append's 200 to 280 us, the largest single cost of sealing. Two index
-- entries in the append's own statement cost a fraction of that, and are as atomic.
--
-- `privacy_orders` keeps its name as a view, so its readers (the erasure's queries) are
-- unchanged: the rows the trigger wrote (kept as `privacy_orders_0011`) and one row per
-- personal event (several per order: the queries de-duplicate; an order whose email changed
-- keeps a row per email, so an erasure by the old email still finds it).
DROP TRIGGER events_privacy_index ON events;
DROP FUNCTION ledger_privacy_index();
ALTER TABLE privacy_orders RENAME TO privacy_orders_0011;

CREATE INDEX events_pd_subject ON events ((metadata->>'pd_subject'), stream_id) WHERE metadata ? 'pd_subject';
CREATE INDEX events_pd_email ON events ((metadata->>'pd_email')) WHERE metadata ? 'pd_subject';

CREATE VIEW privacy_orders AS
SELECT stream_id, subject, email_hmac FROM privacy_orders_0011
UNION ALL
SELECT stream_id, metadata->>'pd_subject', metadata->>'pd_email' FROM events WHERE metadata ? 'pd_subject';

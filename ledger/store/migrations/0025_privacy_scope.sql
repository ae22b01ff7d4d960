-- The `privacy:admin` scope (docs/privacy.md): erase and export a data subject, read the report.
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scopes_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scopes_check
    CHECK (scopes <@ ARRAY['orders:write', 'orders:read', 'audit:read', 'admin', 'privacy:admin']::text[]);

-- An order a destination cannot take (Omnisend: no email and no phone, so no contact to attach
-- it to) is recorded as not applicable, with the reason, instead of parked: parking it would
-- hold it forever and hide the orders that really need an operator. A later event that makes
-- it applicable (an email added) delivers it then, and clears the reason.
ALTER TABLE fanout_delivery ADD COLUMN not_applicable text;

ALTER TABLE fanout_inbox DROP CONSTRAINT fanout_inbox_outcome_check;
ALTER TABLE fanout_inbox ADD CONSTRAINT fanout_inbox_outcome_check
    CHECK (outcome IN ('delivered', 'coalesced', 'noop', 'stale', 'replayed', 'not_applicable'));

CREATE INDEX fanout_delivery_not_applicable ON fanout_delivery (destination)
    WHERE not_applicable IS NOT NULL;

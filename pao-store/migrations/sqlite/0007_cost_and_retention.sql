-- A request's cost, estimated at admission (JSON): approvers see it and approval rules read
-- it. NULL for items that declare no cost and for requests admitted before it was kept.
ALTER TABLE requests ADD COLUMN cost TEXT;
-- Retention finds ended requests oldest first without reading live ones.
CREATE INDEX requests_ended ON requests (updated_at, id)
    WHERE state IN ('completed', 'failed', 'cancelled', 'rejected');

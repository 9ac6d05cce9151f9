-- PAO store schema, PostgreSQL. Timestamps are Unix milliseconds; JSON is TEXT (the store
-- reads and writes whole documents; nothing queries inside them).
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    item_version TEXT NOT NULL,
    item_hash TEXT NOT NULL,
    fields TEXT NOT NULL,
    requester TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    team TEXT NOT NULL,
    environment TEXT,
    priority BIGINT NOT NULL,
    idempotency_key TEXT UNIQUE,
    correlation_id TEXT NOT NULL,
    retry_of TEXT,
    state TEXT NOT NULL,
    rollback TEXT NOT NULL,
    error TEXT,
    approval_due BIGINT,
    escalated BIGINT NOT NULL DEFAULT 0,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    waiting_for TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_expires_at BIGINT
);
CREATE INDEX requests_claim ON requests (state, priority DESC, created_at);
CREATE INDEX requests_requester ON requests (requester_id, created_at);
CREATE INDEX requests_team ON requests (team, created_at);
CREATE INDEX requests_created ON requests (created_at, id);

CREATE TABLE events (
    request_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    correlation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (request_id, seq)
);

CREATE TABLE attempts (
    request_id TEXT NOT NULL,
    action_id TEXT NOT NULL,
    rollback BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (request_id, action_id, rollback, attempt)
);

CREATE TABLE decisions (
    request_id TEXT NOT NULL,
    approver TEXT NOT NULL,
    seq BIGINT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (request_id, approver)
);

CREATE TABLE quota_limits (
    team TEXT NOT NULL,
    resource TEXT NOT NULL,
    lim BIGINT NOT NULL,
    PRIMARY KEY (team, resource)
);

CREATE TABLE quota_reservations (
    request_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    team TEXT NOT NULL,
    amount BIGINT NOT NULL,
    PRIMARY KEY (request_id, resource)
);
CREATE INDEX quota_reservations_team ON quota_reservations (team, resource);

CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    target TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX audit_target ON audit (target, id);

-- Events and audit records are append-only: no code path updates them, and the database
-- refuses it too. Events of ended requests may be purged by the retention job.
CREATE FUNCTION pao_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION pao_refuse_change();
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION pao_refuse_change();
CREATE FUNCTION pao_refuse_live_event_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM requests WHERE id = OLD.request_id
               AND state NOT IN ('completed', 'failed', 'cancelled', 'rejected')) THEN
        RAISE EXCEPTION 'events of live requests cannot be deleted';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER events_no_live_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION pao_refuse_live_event_delete();

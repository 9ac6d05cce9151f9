-- PAO store schema, SQLite. Timestamps are Unix milliseconds; JSON is TEXT.
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
    priority INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    correlation_id TEXT NOT NULL,
    retry_of TEXT,
    state TEXT NOT NULL,
    rollback TEXT NOT NULL,
    error TEXT,
    approval_due INTEGER,
    escalated INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    waiting_for TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    lease_owner TEXT,
    lease_token INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER
);
CREATE INDEX requests_claim ON requests (state, priority DESC, created_at);
CREATE INDEX requests_requester ON requests (requester_id, created_at);
CREATE INDEX requests_team ON requests (team, created_at);
CREATE INDEX requests_created ON requests (created_at, id);

CREATE TABLE events (
    request_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    correlation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (request_id, seq)
);

CREATE TABLE attempts (
    request_id TEXT NOT NULL,
    action_id TEXT NOT NULL,
    rollback INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (request_id, action_id, rollback, attempt)
);

CREATE TABLE decisions (
    request_id TEXT NOT NULL,
    approver TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (request_id, approver)
);

CREATE TABLE quota_limits (
    team TEXT NOT NULL,
    resource TEXT NOT NULL,
    lim INTEGER NOT NULL,
    PRIMARY KEY (team, resource)
);

CREATE TABLE quota_reservations (
    request_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    team TEXT NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (request_id, resource)
);
CREATE INDEX quota_reservations_team ON quota_reservations (team, resource);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    target TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX audit_target ON audit (target, id);

-- Events and audit records are append-only.
CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    WHEN (SELECT state FROM requests WHERE id = OLD.request_id) NOT IN ('completed', 'failed', 'cancelled', 'rejected')
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

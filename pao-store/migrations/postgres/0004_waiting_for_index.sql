-- Finds the in-progress request parked on a ticket (`request_waiting_for`: a JIRA webhook
-- names an issue) without reading every request. Only parked requests are indexed (most wait
-- for nothing); the state is in the key so that SQLite, which keeps no statistics, prefers
-- this index to `requests_claim`.
CREATE INDEX requests_waiting_for ON requests (waiting_for, state) WHERE waiting_for IS NOT NULL;

-- Claims walk the runnable requests in claim order (priority, then age) instead of reading
-- and sorting every runnable row: a claim costs the same with 10 or 100,000 queued requests.
CREATE INDEX requests_runnable ON requests (priority DESC, created_at, id)
    WHERE state IN ('queued', 'in_progress', 'post_fulfillment') AND waiting_for IS NULL;

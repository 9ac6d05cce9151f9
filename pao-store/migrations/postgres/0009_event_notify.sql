-- Every statement that appends events announces the requests it touched on the `pao_events`
-- channel (one notification per request, delivered at commit), so that a replica streaming a
-- request's events over WebSocket wakes when another replica appends one, instead of polling.
CREATE FUNCTION pao_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pao_events', r.request_id)
    FROM (SELECT DISTINCT request_id FROM new_events) AS r;
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION pao_notify_events();

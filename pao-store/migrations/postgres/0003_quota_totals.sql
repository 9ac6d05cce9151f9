-- Running totals of reserved quota per team and resource, kept in the same transaction as the
-- reservations: a reservation checks its limit against one row instead of summing every
-- reservation the team ever made.
CREATE TABLE quota_totals (
    team TEXT NOT NULL,
    resource TEXT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (team, resource)
);
INSERT INTO quota_totals (team, resource, used)
    SELECT team, resource, SUM(amount) FROM quota_reservations GROUP BY team, resource;

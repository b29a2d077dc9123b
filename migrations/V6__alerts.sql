-- The alerts the odds analysis raised, for `GET /api/alerts` over the retention (a node keeps a
-- day of them in memory). Append-only, partitioned by the UTC day of `raised_at` (the
-- raising node's clock) as the price history is, so that retention drops whole days; the
-- writers create each day's table. `alert` is the alert's JSON, as the topic carried it.
CREATE TABLE odds_alerts (
    raised_at timestamptz NOT NULL,
    kind      text        NOT NULL,
    severity  text        NOT NULL,
    event_id  bigint      NOT NULL,
    alert     json        NOT NULL
) PARTITION BY RANGE (raised_at);
CREATE INDEX odds_alerts_raised ON odds_alerts (raised_at);

-- The price history, change-only: a row each time a market's outcomes differ from what
-- odds_current held for it. Partitioned by the day of `recorded_at` (the writer's clock, which
-- no client sets), so that retention drops whole days; the writer creates each day's table.
CREATE TABLE odds_history (
    event_id    bigint      NOT NULL,
    source      text        NOT NULL,
    market_id   text        NOT NULL,
    line        text        NOT NULL,
    outcomes    jsonb       NOT NULL,
    captured_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL
) PARTITION BY RANGE (recorded_at);
CREATE INDEX odds_history_event ON odds_history (event_id, captured_at);

-- The first price ever seen of each outcome: kept past the history's retention, as long as
-- the event's current odds are.
CREATE TABLE odds_opening (
    event_id    bigint           NOT NULL,
    source      text             NOT NULL,
    market_id   text             NOT NULL,
    line        text             NOT NULL,
    outcome     text             NOT NULL,
    odds        double precision NOT NULL,
    captured_at timestamptz      NOT NULL,
    PRIMARY KEY (event_id, source, market_id, line, outcome)
);

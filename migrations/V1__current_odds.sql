-- The current odds: one row per market of each source's latest snapshot of an event,
-- updated in place. `line` is '' for a market without one (a key cannot be NULL).
CREATE TABLE odds_current (
    event_id     bigint      NOT NULL,
    source       text        NOT NULL,
    market_id    text        NOT NULL,
    line         text        NOT NULL,
    position     integer     NOT NULL,
    name         text        NOT NULL,
    outcomes     jsonb       NOT NULL,
    bookmaker_id bigint,
    captured_at  timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (event_id, source, market_id, line)
);
CREATE INDEX odds_current_updated_at ON odds_current (updated_at);

-- What each match is: the latest details a source gave with an applied snapshot.
CREATE TABLE event_details (
    event_id   bigint      PRIMARY KEY,
    source     text        NOT NULL,
    details    jsonb       NOT NULL,
    updated_at timestamptz NOT NULL
);

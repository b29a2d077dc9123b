-- The id the cache gave each market's snapshot: reads served from the database carry it, and
-- a node that starts again numbers its snapshots after the highest, so ids only grow.
ALTER TABLE odds_current ADD COLUMN snapshot_id bigint NOT NULL DEFAULT 0;

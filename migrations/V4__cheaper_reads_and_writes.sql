-- Nothing looks odds_current up by its update time any more but the retention, once an hour:
-- the index only cost every upsert an index write (and kept its updates from being HOT).
DROP INDEX odds_current_updated_at;

-- Outcomes are written and read back whole, as the JSON the broker encoded: kept as that text
-- (`json`), they are read back without jsonb's re-encoding, which was most of a warm start's
-- time in the database. The writer compares them as text: it encodes equal outcomes alike.
ALTER TABLE odds_current ALTER COLUMN outcomes TYPE json USING outcomes::json;
ALTER TABLE odds_history ALTER COLUMN outcomes TYPE json USING outcomes::json;

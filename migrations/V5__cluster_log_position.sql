-- How far a cluster's log is persisted: the epoch of the log and the id (`TOP-SEQ`) of the
-- last entry whose changes are committed. The writer moves it in the same transaction as the
-- rows, after locking it and finding it where it left it, so a new writer resumes exactly
-- there and two writers never both commit the same entries. A single node leaves it alone.
CREATE TABLE log_position (
    id    int    PRIMARY KEY CHECK (id = 1),
    epoch text   NOT NULL,
    top   bigint NOT NULL,
    seq   bigint NOT NULL
);
INSERT INTO log_position (id, epoch, top, seq) VALUES (1, '', 0, 0);

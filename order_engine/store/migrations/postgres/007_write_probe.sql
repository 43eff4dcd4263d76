-- Always empty: while writes fail (a full disk), readiness writes a row here and deletes it
-- in one committed transaction, to learn when writes succeed again.
CREATE TABLE write_probe (filler BYTEA NOT NULL);

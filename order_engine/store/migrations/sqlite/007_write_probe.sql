-- Always empty: while writes fail (a full disk), readiness writes a page-sized row here and
-- deletes it in one committed transaction, to learn when writes succeed again.
CREATE TABLE write_probe (filler BLOB NOT NULL)

-- Ownership: the replica working on an order and until when its lease holds. One process
-- only ever uses a SQLite file, so an order owned by anyone else belongs to a dead process.
ALTER TABLE orders ADD COLUMN owner TEXT;
ALTER TABLE orders ADD COLUMN lease_until REAL

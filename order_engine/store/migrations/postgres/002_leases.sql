-- Ownership across replicas: the replica working on an order and until when its lease
-- holds (database time, so replicas' clocks do not matter). Writes are fenced on owner.
ALTER TABLE orders ADD COLUMN owner TEXT;
ALTER TABLE orders ADD COLUMN lease_until TIMESTAMPTZ;
CREATE INDEX orders_claimable ON orders (lease_until)
    WHERE status NOT IN ('confirmed', 'failed');

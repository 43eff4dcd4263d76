-- Limit and sniper orders: their type, trigger and expiry. Cancelled and expired orders
-- are finished: the partial indexes of unfinished orders leave them out.
ALTER TABLE orders ADD COLUMN order_type TEXT NOT NULL DEFAULT 'market';
ALTER TABLE orders ADD COLUMN limit_price TEXT;
ALTER TABLE orders ADD COLUMN expires_at REAL;
ALTER TABLE orders ADD COLUMN min_liquidity TEXT;
DROP INDEX orders_unfinished;
CREATE INDEX orders_unfinished ON orders (created_at)
    WHERE status NOT IN ('cancelled', 'confirmed', 'expired', 'failed');
CREATE INDEX orders_status ON orders (status, created_at);

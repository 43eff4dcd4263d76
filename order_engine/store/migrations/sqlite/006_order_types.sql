-- Limit and sniper orders: their type, trigger and expiry. Cancelled and expired orders
-- are finished: the partial indexes of unfinished orders leave them out.
ALTER TABLE orders ADD COLUMN order_type TEXT NOT NULL DEFAULT 'market';
ALTER TABLE orders ADD COLUMN limit_price TEXT;
ALTER TABLE orders ADD COLUMN expires_at REAL;
ALTER TABLE orders ADD COLUMN min_liquidity TEXT;
DROP INDEX orders_unfinished;
CREATE INDEX orders_unfinished ON orders (created_at)
    WHERE status NOT IN ('cancelled', 'confirmed', 'expired', 'failed');
-- What the history filters on, in the order it pages: a client's status filter reads only its
-- own rows instead of scanning every order.
CREATE INDEX orders_status ON orders (status, created_at DESC, order_id DESC);
CREATE INDEX orders_client ON orders (client_id, created_at DESC, order_id DESC);

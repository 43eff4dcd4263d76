-- The order history is read newest first, paged by (created_at, order_id).
CREATE INDEX orders_newest ON orders (created_at DESC, order_id DESC)

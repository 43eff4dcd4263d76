-- The client (API key name) an order belongs to, when authentication is on. A client's
-- clientOrderId is unique among its orders.
ALTER TABLE orders ADD COLUMN client_id TEXT;
CREATE UNIQUE INDEX orders_client_order_id ON orders (coalesce(client_id, ''), client_order_id)
    WHERE client_order_id IS NOT NULL;

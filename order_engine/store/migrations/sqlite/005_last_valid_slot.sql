-- The last slot in which the transaction of the current attempt can land. Orders already
-- submitted take it from their last submitted event, which has recorded it all along.
ALTER TABLE orders ADD COLUMN last_valid_slot INTEGER;
UPDATE orders SET last_valid_slot = (
    SELECT CASE
        WHEN json_type(e.payload, '$.lastValidSlot') = 'integer'
        THEN json_extract(e.payload, '$.lastValidSlot')
    END
    FROM order_events AS e
    WHERE e.order_id = orders.order_id AND e.status = 'submitted'
    ORDER BY e.seq DESC
    LIMIT 1
)
WHERE status = 'submitted'

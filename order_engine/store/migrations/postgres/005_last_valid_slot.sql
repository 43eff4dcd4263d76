-- The last slot in which the transaction of the current attempt can land. Orders already
-- submitted take it from their last submitted event, which has recorded it all along.
ALTER TABLE orders ADD COLUMN last_valid_slot BIGINT;
UPDATE orders AS o SET last_valid_slot = (
    SELECT CASE
        -- Only whole numbers: anything else would abort the migration on the cast.
        WHEN jsonb_typeof(e.payload -> 'lastValidSlot') = 'number'
            AND (e.payload ->> 'lastValidSlot') ~ '^-?[0-9]{1,18}$'
        THEN (e.payload ->> 'lastValidSlot')::bigint
    END
    FROM order_events AS e
    WHERE e.order_id = o.order_id AND e.status = 'submitted'
    ORDER BY e.seq DESC
    LIMIT 1
)
WHERE o.status = 'submitted';

CREATE TABLE orders (
    order_id         TEXT PRIMARY KEY,
    token_in         TEXT NOT NULL,
    token_out        TEXT NOT NULL,
    amount           NUMERIC(20, 0) NOT NULL,
    status           TEXT NOT NULL,
    last_seq         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    slippage_bps     INTEGER NOT NULL,
    dex              TEXT,
    executed_price   DOUBLE PRECISION,
    tx_hash          TEXT,
    amount_out       NUMERIC(20, 0),
    min_amount_out   NUMERIC(20, 0),
    error_code       TEXT,
    error_message    TEXT,
    client_order_id  TEXT,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE INDEX orders_unfinished ON orders (created_at)
    WHERE status NOT IN ('confirmed', 'failed');

CREATE TABLE order_events (
    order_id    TEXT NOT NULL REFERENCES orders (order_id),
    seq         INTEGER NOT NULL,
    status      TEXT NOT NULL,
    message     TEXT NOT NULL,
    payload     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- Amounts are integers in base units; SPL amounts are u64, beyond SQLite's signed INTEGER,
-- so they are kept as decimal text.
CREATE TABLE orders (
    order_id         TEXT PRIMARY KEY,
    token_in         TEXT NOT NULL,
    token_out        TEXT NOT NULL,
    amount           TEXT NOT NULL,
    status           TEXT NOT NULL,
    last_seq         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    slippage_bps     INTEGER NOT NULL,
    dex              TEXT,
    executed_price   REAL,
    tx_hash          TEXT,
    amount_out       TEXT,
    min_amount_out   TEXT,
    error_code       TEXT,
    error_message    TEXT,
    client_order_id  TEXT,
    idempotency_key  TEXT UNIQUE,
    request_hash     TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);

CREATE INDEX orders_unfinished ON orders (created_at)
    WHERE status NOT IN ('confirmed', 'failed');

CREATE TABLE order_events (
    order_id    TEXT NOT NULL REFERENCES orders (order_id),
    seq         INTEGER NOT NULL,
    status      TEXT NOT NULL,
    message     TEXT NOT NULL,
    payload     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (order_id, seq)
) WITHOUT ROWID;

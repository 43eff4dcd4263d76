"""The PostgreSQL dialect of the orders row and the statements the PostgreSQL store runs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from order_engine.orders import OrderEvent, Transition
from order_engine.store.rows import (
    EVENT_COLUMNS,
    KINDS,
    ORDER_COLUMNS,
    READ_COLUMNS,
    UNFINISHED,
    UPDATE_COLUMNS,
    Dialect,
    Kind,
    OrderRows,
)


def timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(at: datetime) -> float:
    return at.timestamp()


ROWS = OrderRows(
    Dialect(u64_to_db=Decimal, u64_from_db=int, time_to_db=timestamp, time_from_db=_seconds)
)
# The element type of each kind's array, for the batched statements.
_ARRAY_TYPES = {
    Kind.TEXT: "text",
    Kind.INT: "int8",
    Kind.FLOAT: "float8",
    Kind.U64: "numeric",
    Kind.TIME: "timestamptz",
    Kind.STATUS: "text",
    Kind.ORDER_TYPE: "text",
}
READ_SQL = ", ".join(READ_COLUMNS)
_N = len(ORDER_COLUMNS)
INSERT_ORDER = (
    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}, owner, lease_until)"
    f" VALUES ({', '.join(f'${i}' for i in range(1, _N + 2))},"
    f" CASE WHEN ${_N + 1}::text IS NULL THEN NULL"
    f" ELSE now() + make_interval(secs => ${_N + 2}) END)"
    " ON CONFLICT DO NOTHING RETURNING order_id"
)
INSERT_EVENT = f"INSERT INTO order_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
# The WHERE clause is the fence: the update matches only if this event is the next one and
# this replica still owns the order. $1..$3: status, seq, updated_at; then UPDATE_COLUMNS.
_U = len(UPDATE_COLUMNS)
UPDATE_ORDER = (
    "UPDATE orders SET status = $1, last_seq = $2, updated_at = $3, "
    + ", ".join(f"{c} = coalesce(${i}, {c})" for i, c in enumerate(UPDATE_COLUMNS, start=4))
    + f" WHERE order_id = ${_U + 4} AND last_seq = ${_U + 5}"
    + f" AND owner IS NOT DISTINCT FROM coalesce(${_U + 6}::text, owner)"
    " RETURNING order_id"
)
# The same for many orders at once, one array per column: order_id, then the arguments of
# the statement above in their order, then the seq each order must be at.
UPDATE_MANY = (
    "UPDATE orders AS o SET status = u.status, last_seq = u.seq, updated_at = u.ts, "
    + ", ".join(f"{c} = coalesce(u.{c}, o.{c})" for c in UPDATE_COLUMNS)
    + " FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], "
    + ", ".join(f"${i}::{_ARRAY_TYPES[KINDS[c]]}[]" for i, c in enumerate(UPDATE_COLUMNS, start=5))
    + f", ${_U + 5}::int[]) AS u(order_id, status, seq, ts, {', '.join(UPDATE_COLUMNS)}, after)"
    + f" WHERE o.order_id = u.order_id AND o.last_seq = u.after AND o.owner = ${_U + 6}"
    " RETURNING o.order_id"
)
INSERT_EVENTS = f"""
INSERT INTO order_events ({EVENT_COLUMNS})
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[])
"""
# SKIP LOCKED: replicas claiming at the same moment split the orders instead of queueing
# on each other's row locks; each order goes to exactly one of them.
CLAIM = f"""
UPDATE orders SET owner = $1, lease_until = now() + make_interval(secs => $2)
WHERE order_id IN (
    SELECT order_id FROM orders
    WHERE {UNFINISHED}
      AND (owner IS NULL OR lease_until < now() OR ($4 AND owner = $1))
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {READ_SQL}
"""
# SKIP LOCKED: a row locked by a batch being written now is renewed next time; waiting for
# it could deadlock against that batch (rows locked in another order).
RENEW = (
    "UPDATE orders SET lease_until = now() + make_interval(secs => $2)"
    " WHERE order_id IN (SELECT order_id FROM orders WHERE owner = $1"
    f" AND order_id = ANY($3::text[]) AND {UNFINISHED} FOR UPDATE SKIP LOCKED)"
)
# The stored order a refused insert collides with: the same id, idempotency key, or the same
# client's clientOrderId.
EXISTING = (
    f"SELECT {READ_SQL} FROM orders WHERE order_id = $1"
    " OR (idempotency_key IS NOT NULL AND idempotency_key = $2)"
    " OR (client_order_id IS NOT NULL AND client_order_id = $3"
    " AND coalesce(client_id, '') = coalesce($4, '')) LIMIT 1"
)
NEW_ORDERS_CHANNEL = "order_engine_new_orders"


def event_from_record(r: asyncpg.Record) -> OrderEvent:
    return ROWS.event(r, r["payload"])


def update_args(t: Transition) -> tuple[Any, ...]:
    """Status, seq, updated_at, then UPDATE_COLUMNS: the order of both update statements."""
    e = t.event
    return (e.status.value, e.seq, timestamp(e.ts), *ROWS.update_values(t.update))


def arrays(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows of arguments turned into one array per column, for `unnest`."""
    return [list(column) for column in zip(*rows, strict=True)]

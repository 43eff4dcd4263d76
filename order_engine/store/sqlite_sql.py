"""The SQLite dialect of the orders row and the statements the SQLite store runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from order_engine.orders import OrderEvent, Transition
from order_engine.store.base import OrderQuery
from order_engine.store.rows import (
    EVENT_COLUMNS,
    ORDER_COLUMNS,
    READ_COLUMNS,
    UNFINISHED,
    UPDATE_COLUMNS,
    Dialect,
    OrderRows,
)

# SPL amounts are u64, past SQLite's signed INTEGER: they are kept as decimal text.
ROWS = OrderRows(Dialect(u64_to_db=str, u64_from_db=int, time_to_db=float, time_from_db=float))
READ_SQL = ", ".join(READ_COLUMNS)
INSERT_ORDER = (
    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}, owner, lease_until)"
    f" VALUES ({', '.join('?' * (len(ORDER_COLUMNS) + 2))})"
)
INSERT_EVENT = f"INSERT INTO order_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
# The WHERE clause is the fence: the update matches only if this event is the next one and
# this replica owns the order (the fence owner is NULL for a write made whoever owns it).
UPDATE_ORDER = (
    "UPDATE orders SET status = ?, last_seq = ?, updated_at = ?, "
    + ", ".join(f"{c} = coalesce(?, {c})" for c in UPDATE_COLUMNS)
    + " WHERE order_id = ? AND last_seq = ? AND owner IS coalesce(?, owner)"
)
# A SQLite file has one process: an order leased to any other id was left by a dead one.
CLAIM = f"""
UPDATE orders SET owner = :owner, lease_until = :until
WHERE order_id IN (
    SELECT order_id FROM orders
    WHERE {UNFINISHED} AND (owner IS NULL OR owner != :owner OR :own_too)
    ORDER BY created_at LIMIT :limit
)
RETURNING {READ_SQL}
"""


def event_row(event: OrderEvent) -> tuple[Any, ...]:
    return ROWS.event_values(event, orjson.dumps(event.data).decode())


def event_from_row(row: Sequence[Any]) -> OrderEvent:
    return ROWS.event(row, orjson.loads(row[4]))


def update_row(t: Transition, owner: str) -> tuple[Any, ...]:
    e = t.event
    return (
        e.status.value,
        e.seq,
        e.ts,
        *ROWS.update_values(t.update),
        e.order_id,
        t.after_seq,
        None if t.any_owner else owner,
    )


def find_sql(query: OrderQuery) -> tuple[str, tuple[Any, ...]]:
    """The history query for `query` and its parameters, newest first."""
    where: list[str] = ["1 = 1"]
    params: list[Any] = []
    if query.statuses:
        where.append(f"status IN ({', '.join('?' * len(query.statuses))})")
        params += [s.value for s in query.statuses]
    for column, value in (
        ("token_in", query.token_in),
        ("token_out", query.token_out),
        ("client_id", query.client_id),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if query.created_from is not None:
        where.append("created_at >= ?")
        params.append(query.created_from)
    if query.created_to is not None:
        where.append("created_at < ?")
        params.append(query.created_to)
    if query.before is not None:
        where.append("(created_at, order_id) < (?, ?)")
        params += list(query.before)
    sql = (
        f"SELECT {READ_SQL} FROM orders WHERE {' AND '.join(where)}"
        " ORDER BY created_at DESC, order_id DESC LIMIT ?"
    )
    return sql, (*params, query.limit)


def probe_write(conn: sqlite3.Connection) -> None:
    """A write that needs a page of its own, as an order's writes come to (the disk is full
    when no page can be had), committed with nothing left behind: raises while they fail."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("INSERT INTO write_probe VALUES (zeroblob(?))", (page_size,))
        conn.execute("DELETE FROM write_probe")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise

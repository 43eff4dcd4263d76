"""SQLite store: WAL, one writer with group commit, a separate connection for reads.

Writers (the API creating orders, workers appending events) put their write on a queue and
await its future. One writer task drains the queue into batches and commits each batch in a
single transaction, so a burst of N events costs one fsync, not N. A write that breaks a rule
(a seq that is not next, a duplicate key) fails alone: the batch is retried item by item.

The writer connection lives on a thread of its own and each batch runs there as ONE call,
from BEGIN to COMMIT: a hop between the event loop and a thread per statement costs more
CPU than the statements themselves. Reads go through aiosqlite, one hop per query.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import orjson

from order_engine.orders import Order, OrderEvent, Status, Transition
from order_engine.store.base import DuplicateOrder, OrderQuery, SeqConflict, StoreError
from order_engine.store.group_commit import (
    AppendWrite,
    CreateWrite,
    GroupCommit,
    Write,
    fail,
    succeed,
)
from order_engine.store.migrations import load_migrations

log = logging.getLogger(__name__)

_ORDER_COLUMNS = (
    "order_id, token_in, token_out, amount, status, last_seq, attempts, slippage_bps, dex,"
    " executed_price, tx_hash, amount_out, min_amount_out, error_code, error_message,"
    " client_order_id, idempotency_key, request_hash, created_at, updated_at, client_id"
)
_READ_COLUMNS = f"{_ORDER_COLUMNS}, owner"
_INSERT_ORDER = (
    f"INSERT INTO orders ({_ORDER_COLUMNS}, owner, lease_until) VALUES ({', '.join('?' * 23)})"
)
_INSERT_EVENT = (
    "INSERT INTO order_events (order_id, seq, status, message, payload, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# The WHERE clause is the fence: the update matches only if this event is the next one and
# this replica owns the order.
_UPDATE_ORDER = """
UPDATE orders SET
    status = ?, last_seq = ?, updated_at = ?,
    attempts = coalesce(?, attempts),
    dex = coalesce(?, dex),
    tx_hash = coalesce(?, tx_hash),
    executed_price = coalesce(?, executed_price),
    amount_out = coalesce(?, amount_out),
    min_amount_out = coalesce(?, min_amount_out),
    error_code = coalesce(?, error_code),
    error_message = coalesce(?, error_message)
WHERE order_id = ? AND last_seq = ? AND owner = ?
"""
_UNFINISHED = "status NOT IN ('confirmed', 'failed')"
# A SQLite file has one process: an order leased to any other id was left by a dead one.
_CLAIM = f"""
UPDATE orders SET owner = :owner, lease_until = :until
WHERE order_id IN (
    SELECT order_id FROM orders
    WHERE {_UNFINISHED} AND (owner IS NULL OR owner != :owner OR :own_too)
    ORDER BY created_at LIMIT :limit
)
RETURNING {_READ_COLUMNS}
"""


def _opt_str(value: int | None) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: str | None) -> int | None:
    return None if value is None else int(value)


def order_row(order: Order) -> tuple[Any, ...]:
    return (
        order.order_id,
        order.token_in,
        order.token_out,
        str(order.amount),
        order.status.value,
        order.last_seq,
        order.attempts,
        order.slippage_bps,
        order.dex,
        order.executed_price,
        order.tx_hash,
        _opt_str(order.amount_out),
        _opt_str(order.min_amount_out),
        order.error_code,
        order.error_message,
        order.client_order_id,
        order.idempotency_key,
        order.request_hash,
        order.created_at,
        order.updated_at,
        order.client_id,
    )


def order_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Order:
    (
        order_id,
        token_in,
        token_out,
        amount,
        status,
        last_seq,
        attempts,
        slippage_bps,
        dex,
        executed_price,
        tx_hash,
        amount_out,
        min_amount_out,
        error_code,
        error_message,
        client_order_id,
        idempotency_key,
        request_hash,
        created_at,
        updated_at,
        client_id,
        owner,
    ) = tuple(row)
    return Order(
        order_id=order_id,
        token_in=token_in,
        token_out=token_out,
        amount=int(amount),
        slippage_bps=slippage_bps,
        status=Status(status),
        last_seq=last_seq,
        attempts=attempts,
        created_at=created_at,
        updated_at=updated_at,
        client_order_id=client_order_id,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        dex=dex,
        tx_hash=tx_hash,
        executed_price=executed_price,
        amount_out=_opt_int(amount_out),
        min_amount_out=_opt_int(min_amount_out),
        error_code=error_code,
        error_message=error_message,
        client_id=client_id,
        owner=owner,
    )


def event_row(event: OrderEvent) -> tuple[Any, ...]:
    return (
        event.order_id,
        event.seq,
        event.status.value,
        event.message,
        orjson.dumps(event.data).decode(),
        event.ts,
    )


def event_from_row(row: sqlite3.Row | tuple[Any, ...]) -> OrderEvent:
    order_id, seq, status, message, payload, created_at = tuple(row)
    return OrderEvent(
        order_id=order_id,
        seq=seq,
        status=Status(status),
        message=message,
        ts=created_at,
        data=orjson.loads(payload),
    )


def update_row(t: Transition, owner: str) -> tuple[Any, ...]:
    e, u = t.event, t.update
    return (
        e.status.value,
        e.seq,
        e.ts,
        u.attempts,
        u.dex,
        u.tx_hash,
        u.executed_price,
        _opt_str(u.amount_out),
        _opt_str(u.min_amount_out),
        u.error_code,
        u.error_message,
        e.order_id,
        e.seq - 1,
        owner,
    )


class SQLiteStore:
    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        max_batch: int = 256,
        owner: str = "local",
        lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = str(path)
        self._synchronous = synchronous
        self._owner = owner
        self._lease_s = lease_s
        self._clock = clock
        self._writer: sqlite3.Connection | None = None  # used on `_write_thread` only
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader: aiosqlite.Connection | None = None
        self._writes = GroupCommit(self._commit_batch, max_batch=max_batch, name="sqlite-writer")
        self._closed = False

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._writes.batch_sizes)

    def observe_batches(self, callback: Callable[[int], None]) -> None:
        self._writes.on_batch = callback

    async def on_new_orders(self, callback: Callable[[], None]) -> None:
        """One process per file: it took every order itself; nothing to hear of."""

    @property
    def owner(self) -> str:
        return self._owner

    async def open(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        await self._on_writer(self._open_writer)
        self._reader = await aiosqlite.connect(self._path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")
        self._writes.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._writes.stop()
        await self._disconnect()

    async def abort(self) -> None:
        """Stop without finishing queued writes, as a crash would (tests of recovery)."""
        self._closed = True
        await self._writes.abort()
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._reader is not None:
            await self._reader.close()
        if self._writer is not None:
            await self._on_writer(self._writer.close)
        self._write_thread.shutdown(wait=False)

    async def _on_writer(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._write_thread, fn)

    def _open_writer(self) -> None:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        _migrate(conn)
        self._writer = conn

    # -- writes -------------------------------------------------------------------------

    async def create(self, order: Order, first: OrderEvent, *, owned: bool = True) -> None:
        await self._writes.create(order, first, owned)

    async def append(self, transition: Transition) -> None:
        await self._writes.append(transition)

    async def _commit_batch(self, batch: list[Write]) -> None:
        rows = [self._write_rows(w) for w in batch]
        try:
            outcomes = await self._on_writer(lambda: self._commit_sync(rows))
        except sqlite3.Error as exc:
            for write in batch:
                fail(write, StoreError(f"sqlite write failed: {exc}"))
            return
        for write, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                succeed(write)
            elif outcome is _RULE_BROKEN:
                fail(write, await self._rule_error(write))
            else:
                fail(write, StoreError(f"sqlite write failed: {outcome}"))

    def _write_rows(self, write: Write) -> _Rows:
        if isinstance(write, CreateWrite):
            return (self._create_row(write), None, event_row(write.first))
        t = write.transition
        return (None, update_row(t, self._owner), event_row(t.event))

    def _commit_sync(self, rows: list[_Rows]) -> list[object]:
        """On the writer thread: the whole batch in one transaction; if a write breaks a
        rule, roll back and commit each alone so it fails by itself."""
        conn = self._writer
        assert conn is not None
        creates = [c for r in rows if (c := r[0]) is not None]
        updates = [u for r in rows if (u := r[1]) is not None]
        try:
            conn.execute("BEGIN IMMEDIATE")
            if creates:
                conn.executemany(_INSERT_ORDER, creates)
            if updates:
                cur = conn.executemany(_UPDATE_ORDER, updates)
                if cur.rowcount != len(updates):
                    raise _BatchRejected
            conn.executemany(_INSERT_EVENT, [r[2] for r in rows])
            conn.execute("COMMIT")
        except (_BatchRejected, sqlite3.IntegrityError):
            conn.execute("ROLLBACK")
            return [self._commit_one_sync(conn, r) for r in rows]
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [None] * len(rows)

    @staticmethod
    def _commit_one_sync(conn: sqlite3.Connection, row: _Rows) -> object:
        create, update, event = row
        try:
            conn.execute("BEGIN IMMEDIATE")
            if create is not None:
                conn.execute(_INSERT_ORDER, create)
            else:
                assert update is not None
                if conn.execute(_UPDATE_ORDER, update).rowcount != 1:
                    raise _BatchRejected
            conn.execute(_INSERT_EVENT, event)
            conn.execute("COMMIT")
        except (_BatchRejected, sqlite3.IntegrityError):
            conn.execute("ROLLBACK")
            return _RULE_BROKEN
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return exc
        return None

    def _create_row(self, write: CreateWrite) -> tuple[Any, ...]:
        if not write.owned:
            return (*order_row(write.order), None, None)
        return (*order_row(write.order), self._owner, self._clock() + self._lease_s)

    # -- leases -------------------------------------------------------------------------
    # Lease changes are writes: they run on the writer's thread, between batches.

    async def _write(self, sql: str, params: Any) -> list[Any]:
        """One statement on the writer's connection, its rows (RETURNING) fetched."""
        if self._writer is None or self._closed:
            raise StoreError("store is closed")
        conn = self._writer

        def run() -> list[Any]:
            return conn.execute(sql, params).fetchall()

        try:
            return await self._on_writer(run)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite write failed: {exc}") from exc

    async def _changed(self, sql: str, params: Any) -> int:
        if self._writer is None or self._closed:
            raise StoreError("store is closed")
        conn = self._writer
        try:
            return await self._on_writer(lambda: conn.execute(sql, params).rowcount)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite write failed: {exc}") from exc

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        if limit <= 0:
            return []
        params = {
            "owner": self._owner,
            "until": self._clock() + self._lease_s,
            "own_too": own_too,
            "limit": limit,
        }
        rows = await self._write(_CLAIM, params)
        return sorted((order_from_row(r) for r in rows), key=lambda o: o.created_at)

    async def forget_idempotency_key(self, key: str) -> None:
        await self._changed(
            "UPDATE orders SET idempotency_key = NULL WHERE idempotency_key = ?", (key,)
        )

    async def renew(self, order_ids: list[str]) -> int:
        # One process per file: nobody could take these over, so leases need no upkeep.
        return 0

    async def release(self) -> int:
        return await self._changed(
            f"UPDATE orders SET owner = NULL, lease_until = NULL WHERE owner = ? AND {_UNFINISHED}",
            (self._owner,),
        )

    async def _rule_error(self, write: Write) -> Exception:
        if isinstance(write, AppendWrite):
            event = write.transition.event
            return SeqConflict(event.order_id, event.seq)
        order = write.order
        existing = await self.get(order.order_id)
        if existing is None and order.idempotency_key is not None:
            existing = await self.by_idempotency_key(order.idempotency_key)
        if existing is None and order.client_order_id is not None:
            existing = await self._by_client_order_id(order.client_id, order.client_order_id)
        if existing is None:  # pragma: no cover - an integrity error has a culprit
            return StoreError(f"order {order.order_id} could not be created")
        return DuplicateOrder(existing)

    # -- reads --------------------------------------------------------------------------

    async def _read(self, sql: str, params: Any = ()) -> list[Any]:
        if self._reader is None or self._closed:
            raise StoreError("store is closed")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"sqlite read failed: {exc}") from exc

    async def get(self, order_id: str) -> Order | None:
        sql = f"SELECT {_READ_COLUMNS} FROM orders WHERE order_id = ?"
        found = await self._read(sql, (order_id,))
        row = next(iter(found), None)
        return None if row is None else order_from_row(row)

    async def by_idempotency_key(self, key: str) -> Order | None:
        sql = f"SELECT {_READ_COLUMNS} FROM orders WHERE idempotency_key = ?"
        found = await self._read(sql, (key,))
        row = next(iter(found), None)
        return None if row is None else order_from_row(row)

    async def _by_client_order_id(
        self, client_id: str | None, client_order_id: str
    ) -> Order | None:
        sql = (
            f"SELECT {_READ_COLUMNS} FROM orders"
            " WHERE coalesce(client_id, '') = coalesce(?, '') AND client_order_id = ?"
        )
        found = await self._read(sql, (client_id, client_order_id))
        row = next(iter(found), None)
        return None if row is None else order_from_row(row)

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        sql = (
            "SELECT order_id, seq, status, message, payload, created_at FROM order_events"
            " WHERE order_id = ? AND seq > ? ORDER BY seq"
        )
        rows = await self._read(sql, (order_id, after))
        return [event_from_row(r) for r in rows]

    async def find(self, query: OrderQuery) -> list[Order]:
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
            f"SELECT {_READ_COLUMNS} FROM orders WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, order_id DESC LIMIT ?"
        )
        rows = await self._read(sql, (*params, query.limit))
        return [order_from_row(r) for r in rows]

    async def last_seqs(self, order_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(order_ids), 500):  # SQLite caps bound parameters
            chunk = order_ids[start : start + 500]
            sql = (
                "SELECT order_id, last_seq FROM orders"
                f" WHERE order_id IN ({', '.join('?' * len(chunk))})"
            )
            rows = await self._read(sql, chunk)
            found.update({row[0]: row[1] for row in rows})
        return found

    async def unfinished(self) -> list[Order]:
        sql = (
            f"SELECT {_READ_COLUMNS} FROM orders"
            " WHERE status NOT IN ('confirmed', 'failed') ORDER BY created_at"
        )
        rows = await self._read(sql)
        return [order_from_row(r) for r in rows]

    async def ping(self) -> None:
        await self._read("SELECT 1")


_T = TypeVar("_T")
# (order row to insert, or None; update row, or None; event row)
_Rows = tuple[tuple[Any, ...] | None, tuple[Any, ...] | None, tuple[Any, ...]]
_RULE_BROKEN = object()  # a write's outcome: a seq that is not next, a duplicate key


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for version, sql in load_migrations("sqlite"):
        if version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?, strftime('%s','now'))", (version,)
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("sqlite: applied migration %03d", version)


class _BatchRejected(Exception):
    """A fenced update matched no row: some write in the batch is not the next one."""

"""SQLite store: WAL, one writer with group commit, a separate connection for reads.

Writers (the API creating orders, workers appending events) put their write on a queue and
await its future. One writer task drains the queue into batches and commits each batch in a
single transaction, so a burst of N events costs one fsync, not N. A write that breaks a rule
(a seq that is not next, a duplicate key) fails alone: the batch is retried item by item.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        # Lease updates get a connection of their own: on the writer's they could land
        # inside a batch's transaction and be rolled back with it.
        self._leases: aiosqlite.Connection | None = None
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
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
        self._writer = await aiosqlite.connect(self._path, isolation_level=None)
        await self._writer.execute("PRAGMA journal_mode=WAL")
        await self._writer.execute(f"PRAGMA synchronous={self._synchronous}")
        await self._writer.execute("PRAGMA foreign_keys=ON")
        await self._writer.execute("PRAGMA busy_timeout=5000")
        await self._migrate(self._writer)
        self._reader = await aiosqlite.connect(self._path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")
        self._leases = await aiosqlite.connect(self._path, isolation_level=None)
        await self._leases.execute("PRAGMA busy_timeout=5000")
        await self._leases.execute(f"PRAGMA synchronous={self._synchronous}")
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
        for conn in (self._leases, self._reader, self._writer):
            if conn is not None:
                await conn.close()

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        async with conn.execute("SELECT version FROM schema_migrations") as cur:
            applied = {row[0] for row in await cur.fetchall()}
        for version, sql in load_migrations("sqlite"):
            if version in applied:
                continue
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql.split(";\n"):
                    if statement.strip():
                        await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, strftime('%s','now'))", (version,)
                )
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            log.info("sqlite: applied migration %03d", version)

    # -- writes -------------------------------------------------------------------------

    async def create(self, order: Order, first: OrderEvent, *, owned: bool = True) -> None:
        await self._writes.create(order, first, owned)

    async def append(self, transition: Transition) -> None:
        await self._writes.append(transition)

    async def _commit_batch(self, batch: list[Write]) -> None:
        conn = self._writer
        assert conn is not None
        creates = [w for w in batch if isinstance(w, CreateWrite)]
        appends = [w for w in batch if isinstance(w, AppendWrite)]
        try:
            await conn.execute("BEGIN IMMEDIATE")
            if creates:
                await conn.executemany(_INSERT_ORDER, [self._create_row(w) for w in creates])
                await conn.executemany(_INSERT_EVENT, [event_row(w.first) for w in creates])
            if appends:
                cur = await conn.executemany(
                    _UPDATE_ORDER, [update_row(w.transition, self._owner) for w in appends]
                )
                if cur.rowcount != len(appends):
                    raise _BatchRejected
                await conn.executemany(
                    _INSERT_EVENT, [event_row(w.transition.event) for w in appends]
                )
            await conn.execute("COMMIT")
        except (_BatchRejected, sqlite3.IntegrityError):
            await conn.execute("ROLLBACK")
            # Some write broke a rule; find it by committing each on its own.
            for write in batch:
                await self._commit_one(conn, write)
            return
        except BaseException:
            await self._rollback_quietly(conn)
            raise
        for write in batch:
            succeed(write)

    async def _commit_one(self, conn: aiosqlite.Connection, write: Write) -> None:
        try:
            await conn.execute("BEGIN IMMEDIATE")
            if isinstance(write, CreateWrite):
                await conn.execute(_INSERT_ORDER, self._create_row(write))
                await conn.execute(_INSERT_EVENT, event_row(write.first))
            else:
                cur = await conn.execute(_UPDATE_ORDER, update_row(write.transition, self._owner))
                if cur.rowcount != 1:
                    raise _BatchRejected
                await conn.execute(_INSERT_EVENT, event_row(write.transition.event))
            await conn.execute("COMMIT")
        except (_BatchRejected, sqlite3.IntegrityError):
            await conn.execute("ROLLBACK")
            fail(write, await self._rule_error(write))
            return
        except Exception as exc:
            await self._rollback_quietly(conn)
            fail(write, StoreError(f"sqlite write failed: {exc}"))
            return
        succeed(write)

    def _create_row(self, write: CreateWrite) -> tuple[Any, ...]:
        if not write.owned:
            return (*order_row(write.order), None, None)
        return (*order_row(write.order), self._owner, self._clock() + self._lease_s)

    # -- leases -------------------------------------------------------------------------

    def _lease_conn(self) -> aiosqlite.Connection:
        if self._leases is None or self._closed:
            raise StoreError("store is closed")
        return self._leases

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        if limit <= 0:
            return []
        params = {
            "owner": self._owner,
            "until": self._clock() + self._lease_s,
            "own_too": own_too,
            "limit": limit,
        }
        async with self._lease_conn().execute(_CLAIM, params) as cur:
            rows = await cur.fetchall()
        return sorted((order_from_row(r) for r in rows), key=lambda o: o.created_at)

    async def forget_idempotency_key(self, key: str) -> None:
        await self._lease_conn().execute(
            "UPDATE orders SET idempotency_key = NULL WHERE idempotency_key = ?", (key,)
        )

    async def renew(self) -> int:
        cur = await self._lease_conn().execute(
            f"UPDATE orders SET lease_until = ? WHERE owner = ? AND {_UNFINISHED}",
            (self._clock() + self._lease_s, self._owner),
        )
        return cur.rowcount

    async def release(self) -> int:
        cur = await self._lease_conn().execute(
            f"UPDATE orders SET owner = NULL, lease_until = NULL WHERE owner = ? AND {_UNFINISHED}",
            (self._owner,),
        )
        return cur.rowcount

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

    @staticmethod
    async def _rollback_quietly(conn: aiosqlite.Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")

    # -- reads --------------------------------------------------------------------------

    def _read_conn(self) -> aiosqlite.Connection:
        if self._reader is None or self._closed:
            raise StoreError("store is closed")
        return self._reader

    async def get(self, order_id: str) -> Order | None:
        sql = f"SELECT {_READ_COLUMNS} FROM orders WHERE order_id = ?"
        async with self._read_conn().execute(sql, (order_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else order_from_row(row)

    async def by_idempotency_key(self, key: str) -> Order | None:
        sql = f"SELECT {_READ_COLUMNS} FROM orders WHERE idempotency_key = ?"
        async with self._read_conn().execute(sql, (key,)) as cur:
            row = await cur.fetchone()
        return None if row is None else order_from_row(row)

    async def _by_client_order_id(
        self, client_id: str | None, client_order_id: str
    ) -> Order | None:
        sql = (
            f"SELECT {_READ_COLUMNS} FROM orders"
            " WHERE coalesce(client_id, '') = coalesce(?, '') AND client_order_id = ?"
        )
        async with self._read_conn().execute(sql, (client_id, client_order_id)) as cur:
            row = await cur.fetchone()
        return None if row is None else order_from_row(row)

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        sql = (
            "SELECT order_id, seq, status, message, payload, created_at FROM order_events"
            " WHERE order_id = ? AND seq > ? ORDER BY seq"
        )
        async with self._read_conn().execute(sql, (order_id, after)) as cur:
            rows = await cur.fetchall()
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
        async with self._read_conn().execute(sql, (*params, query.limit)) as cur:
            rows = await cur.fetchall()
        return [order_from_row(r) for r in rows]

    async def last_seqs(self, order_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(order_ids), 500):  # SQLite caps bound parameters
            chunk = order_ids[start : start + 500]
            sql = (
                "SELECT order_id, last_seq FROM orders"
                f" WHERE order_id IN ({', '.join('?' * len(chunk))})"
            )
            async with self._read_conn().execute(sql, chunk) as cur:
                found.update({row[0]: row[1] for row in await cur.fetchall()})
        return found

    async def unfinished(self) -> list[Order]:
        sql = (
            f"SELECT {_READ_COLUMNS} FROM orders"
            " WHERE status NOT IN ('confirmed', 'failed') ORDER BY created_at"
        )
        async with self._read_conn().execute(sql) as cur:
            rows = await cur.fetchall()
        return [order_from_row(r) for r in rows]

    async def ping(self) -> None:
        try:
            async with self._read_conn().execute("SELECT 1") as cur:
                await cur.fetchone()
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"sqlite unavailable: {exc}") from exc


class _BatchRejected(Exception):
    """A fenced update matched no row: some write in the batch is not the next one."""

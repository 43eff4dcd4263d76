"""SQLite store: WAL, one writer with group commit, a separate connection for reads.

Writers (the API creating orders, workers appending events) put their write on a queue and
await its future. One writer task drains the queue into batches and commits each batch in a
single transaction, so a burst of N events costs one fsync, not N. A write that breaks a rule
(a seq that is not next, a duplicate key) or that the driver cannot bind (text it cannot
encode) fails alone: the batch is retried item by item. Only an error of the database itself
(locked, I/O, full) fails the whole batch.

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

from order_engine.orders import Order, OrderEvent, Transition
from order_engine.store.base import (
    DuplicateOrder,
    OrderQuery,
    SeqConflict,
    StoreConflict,
    StoreUnavailable,
)
from order_engine.store.group_commit import (
    AppendWrite,
    CreateWrite,
    GroupCommit,
    Write,
    fail,
    succeed,
)
from order_engine.store.migrations import migrate_sqlite
from order_engine.store.rows import EVENT_COLUMNS, UNFINISHED
from order_engine.store.sqlite_errors import corruption, is_outage
from order_engine.store.sqlite_file import DatabaseFile
from order_engine.store.sqlite_lock import ProcessLock
from order_engine.store.sqlite_sql import (
    CLAIM,
    INSERT_EVENT,
    INSERT_ORDER,
    READ_SQL,
    ROWS,
    UPDATE_ORDER,
    event_from_row,
    event_row,
    find_sql,
    probe_write,
    update_row,
)

log = logging.getLogger(__name__)


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
        # History queries and counts, which may scan many rows, read on a connection of their
        # own (each aiosqlite connection serves one query at a time): a client paging through
        # orders never holds up a watcher's replay or an order's lookup.
        self._scanner: aiosqlite.Connection | None = None
        self._writes = GroupCommit(self._commit_batch, max_batch=max_batch, name="sqlite-writer")
        self._closed = False
        self._lock: str | None = None
        self._file: DatabaseFile | None = None  # None for a memory database
        self._corrupt: str | None = None  # what SQLite said when it met a malformed page

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
        """Raises DatabaseInUse if another process has the file open, StoreUnavailable
        (naming the file and the cause) if it cannot be opened as this engine's database."""
        try:
            if self._path != ":memory:":  # nobody else can reach a memory database
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                self._lock = ProcessLock.acquire(self._path)
            await self._on_writer(self._open_writer)
            self._reader = await aiosqlite.connect(self._path, isolation_level=None)
            self._scanner = await aiosqlite.connect(self._path, isolation_level=None)
            if self._path != ":memory:":
                self._file = DatabaseFile(self._path)
            await self._reader.execute("PRAGMA busy_timeout=5000")
            await self._scanner.execute("PRAGMA busy_timeout=5000")
        except (sqlite3.Error, OSError) as exc:
            self._unlock()
            raise StoreUnavailable(f"cannot open the SQLite database {self._path}: {exc}") from exc
        except BaseException:
            self._unlock()
            raise
        self._writes.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._writes.stop()
            await self._disconnect()
        finally:
            self._unlock()

    async def abort(self) -> None:
        """Stop without finishing queued writes, as a crash would (tests of recovery)."""
        self._closed = True
        try:
            await self._writes.abort()
            await self._disconnect()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            ProcessLock.release(self._lock)
            self._lock = None

    async def _disconnect(self) -> None:
        for reader in (self._reader, self._scanner):
            if reader is not None:
                await reader.close()
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
        migrate_sqlite(conn)
        self._writer = conn

    # -- writes -------------------------------------------------------------------------

    async def create(self, order: Order, first: OrderEvent, *, owned: bool = True) -> None:
        await self._writes.create(order, first, owned)

    async def append(self, transition: Transition) -> None:
        await self._writes.append(transition)

    async def _commit_batch(self, batch: list[Write]) -> None:
        if self._file is not None:
            try:
                self._file.check()
            except StoreUnavailable as exc:
                for write in batch:
                    fail(write, exc)
                return
        rows = [self._write_rows(w) for w in batch]
        try:
            outcomes = await self._on_writer(lambda: self._commit_sync(rows))
        except sqlite3.Error as exc:
            self._note_corrupt(exc)
            for write in batch:
                fail(write, StoreUnavailable(f"sqlite write failed: {exc}"))
            return
        for write, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                succeed(write)
            elif outcome is _RULE_BROKEN:
                fail(write, await self._rule_error(write))
            elif isinstance(outcome, Exception) and not is_outage(outcome):
                fail(write, outcome)  # this write's own fault: repeating it fails again
            else:
                self._note_corrupt(outcome)
                fail(write, StoreUnavailable(f"sqlite write failed: {outcome}"))

    def _write_rows(self, write: Write) -> _Rows:
        if isinstance(write, CreateWrite):
            return (self._create_row(write), None, [event_row(write.first)])
        t = write.transition
        return (None, update_row(t, self._owner), [event_row(e) for e in t.events])

    def _commit_sync(self, rows: list[_Rows]) -> list[object]:
        """On the writer thread: the whole batch in one transaction; if a write breaks a
        rule or cannot be bound, roll back and commit each alone so it fails by itself."""
        conn = self._writer
        assert conn is not None
        creates = [c for r in rows if (c := r[0]) is not None]
        updates = [u for r in rows if (u := r[1]) is not None]
        try:
            conn.execute("BEGIN IMMEDIATE")
            if creates:
                conn.executemany(INSERT_ORDER, creates)
            if updates:
                cur = conn.executemany(UPDATE_ORDER, updates)
                if cur.rowcount != len(updates):
                    raise _BatchRejected
            conn.executemany(INSERT_EVENT, [e for r in rows for e in r[2]])
            conn.execute("COMMIT")
        except (_BatchRejected, sqlite3.IntegrityError):
            conn.execute("ROLLBACK")
            return [self._commit_one_sync(conn, r) for r in rows]
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_outage(exc):
                raise
            if len(rows) == 1:
                return [exc]
            return [self._commit_one_sync(conn, r) for r in rows]
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [None] * len(rows)

    @staticmethod
    def _commit_one_sync(conn: sqlite3.Connection, row: _Rows) -> object:
        create, update, events = row
        try:
            conn.execute("BEGIN IMMEDIATE")
            if create is not None:
                conn.execute(INSERT_ORDER, create)
            else:
                assert update is not None
                if conn.execute(UPDATE_ORDER, update).rowcount != 1:
                    raise _BatchRejected
            conn.executemany(INSERT_EVENT, events)
            conn.execute("COMMIT")
        except (_BatchRejected, sqlite3.IntegrityError):
            conn.execute("ROLLBACK")
            return _RULE_BROKEN
        except Exception as exc:
            # Returned, never raised: the writes before this one are committed already.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return exc
        return None

    def _create_row(self, write: CreateWrite) -> tuple[Any, ...]:
        if not write.owned:
            return (*ROWS.order_values(write.order), None, None)
        return (*ROWS.order_values(write.order), self._owner, self._clock() + self._lease_s)

    # -- leases -------------------------------------------------------------------------
    # Lease changes are writes: they run on the writer's thread, between batches.

    async def _write(self, sql: str, params: Any) -> list[Any]:
        """One statement on the writer's connection, its rows (RETURNING) fetched."""
        if self._writer is None or self._closed:
            raise StoreUnavailable("store is closed")
        conn = self._writer

        def run() -> list[Any]:
            return conn.execute(sql, params).fetchall()

        try:
            return await self._on_writer(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite write failed: {exc}") from exc

    async def _changed(self, sql: str, params: Any) -> int:
        if self._writer is None or self._closed:
            raise StoreUnavailable("store is closed")
        conn = self._writer
        try:
            return await self._on_writer(lambda: conn.execute(sql, params).rowcount)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite write failed: {exc}") from exc

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        if limit <= 0:
            return []
        params = {
            "owner": self._owner,
            "until": self._clock() + self._lease_s,
            "own_too": own_too,
            "limit": limit,
        }
        rows = await self._write(CLAIM, params)
        return sorted((ROWS.order(r) for r in rows), key=lambda o: o.created_at)

    async def forget_idempotency_key(self, key: str) -> None:
        await self._changed(
            "UPDATE orders SET idempotency_key = NULL WHERE idempotency_key = ?", (key,)
        )

    async def renew(self, order_ids: list[str]) -> int:
        # One process per file: nobody could take these over, so leases need no upkeep.
        return 0

    async def release(self) -> int:
        return await self._changed(
            f"UPDATE orders SET owner = NULL, lease_until = NULL WHERE owner = ? AND {UNFINISHED}",
            (self._owner,),
        )

    async def _rule_error(self, write: Write) -> Exception:
        if isinstance(write, AppendWrite):
            event = write.transition.events[0]
            return SeqConflict(event.order_id, event.seq)
        order = write.order
        existing = await self.get(order.order_id)
        if existing is None and order.idempotency_key is not None:
            existing = await self.by_idempotency_key(order.idempotency_key)
        if existing is None and order.client_order_id is not None:
            existing = await self._by_client_order_id(order.client_id, order.client_order_id)
        if existing is None:  # its key was freed since, or a constraint no order explains
            return StoreConflict(f"order {order.order_id} refused, no stored order holds its keys")
        return DuplicateOrder(existing)

    # -- reads --------------------------------------------------------------------------

    async def _read(self, sql: str, params: Any = (), *, scan: bool = False) -> list[Any]:
        """`scan`: a query that may read many rows, on the scanning connection."""
        reader = self._scanner if scan else self._reader
        if reader is None or self._closed:
            raise StoreUnavailable("store is closed")
        try:
            return list(await reader.execute_fetchall(sql, params))
        except (sqlite3.Error, ValueError) as exc:
            self._note_corrupt(exc)
            raise StoreUnavailable(f"sqlite read failed: {exc}") from exc

    async def _one(self, where: str, params: Any) -> Order | None:
        found = await self._read(f"SELECT {READ_SQL} FROM orders WHERE {where}", params)
        return ROWS.order(found[0]) if found else None

    async def get(self, order_id: str) -> Order | None:
        return await self._one("order_id = ?", (order_id,))

    async def by_idempotency_key(self, key: str) -> Order | None:
        return await self._one("idempotency_key = ?", (key,))

    async def _by_client_order_id(
        self, client_id: str | None, client_order_id: str
    ) -> Order | None:
        where = "coalesce(client_id, '') = coalesce(?, '') AND client_order_id = ?"
        return await self._one(where, (client_id, client_order_id))

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM order_events WHERE order_id = ? AND seq > ? ORDER BY seq"
        )
        rows = await self._read(sql, (order_id, after))
        return [event_from_row(r) for r in rows]

    async def find(self, query: OrderQuery) -> list[Order]:
        sql, params = find_sql(query)
        rows = await self._read(sql, params, scan=True)
        return [ROWS.order(r) for r in rows]

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

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._read("SELECT status, count(*) FROM orders GROUP BY status", scan=True)
        return {row[0]: row[1] for row in rows}

    async def unfinished(self) -> list[Order]:
        rows = await self._read(
            f"SELECT {READ_SQL} FROM orders WHERE {UNFINISHED} ORDER BY created_at"
        )
        return [ROWS.order(r) for r in rows]

    async def ping(self) -> None:
        """Ready only while the opened file is still the database's, its orders table can be
        read and, once a write failed (a full disk), until a probe write succeeds. Never
        again once a read or write met a malformed page: a corrupt file does not heal, and
        the pages a readiness read touches may be sound while others are not."""
        if self._file is not None:
            self._file.check()
        if self._corrupt is not None:
            raise StoreUnavailable(self._corrupt)
        await self._read("SELECT 1 FROM orders LIMIT 1")
        if self._writes.failing is not None:
            await self._probe_write()

    async def _probe_write(self) -> None:
        conn = self._writer
        if conn is None or self._closed:
            raise StoreUnavailable("store is closed")
        try:
            await self._on_writer(lambda: probe_write(conn))
        except sqlite3.Error as exc:
            self._note_corrupt(exc)
            raise StoreUnavailable(f"writes are failing: {exc}") from exc
        self._writes.failing = None

    def _note_corrupt(self, exc: object) -> None:
        """Remember (and log once) an error saying the database file is malformed."""
        if self._corrupt is None and (found := corruption(self._path, exc)) is not None:
            self._corrupt = found
            log.error(found)


_T = TypeVar("_T")
# (order row to insert, or None; update row, or None; event row)
_Rows = tuple[tuple[Any, ...] | None, tuple[Any, ...] | None, list[tuple[Any, ...]]]
_RULE_BROKEN = object()  # a write's outcome: a seq that is not next, a duplicate key


class _BatchRejected(Exception):
    """A fenced update matched no row: some write in the batch is not the next one."""

"""PostgreSQL store (asyncpg pool): the same contract as SQLite, for replicas.

Writes are grouped like SQLite's: one transaction per batch. Rule checks never raise inside
the transaction: the fenced UPDATE returns nothing when the seq is not next, the INSERT of a
duplicate order does nothing, so one bad write fails alone without rolling back the others.
A value PostgreSQL or the driver refuses does raise, and rolls the batch back: it is then
committed write by write (see group_commit), so that write still fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

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
from order_engine.store.migrations import migrate_postgres
from order_engine.store.postgres_sql import (
    CLAIM,
    EXISTING,
    INSERT_EVENT,
    INSERT_EVENTS,
    INSERT_ORDER,
    NEW_ORDERS_CHANNEL,
    READ_SQL,
    RENEW,
    ROWS,
    UPDATE_MANY,
    UPDATE_ORDER,
    arrays,
    event_from_record,
    timestamp,
    update_args,
)
from order_engine.store.rows import EVENT_COLUMNS, UNFINISHED

log = logging.getLogger(__name__)


def _row_at_fault(exc: Exception) -> bool:
    """An error of one write's values (text the driver cannot encode, NUL, a number out of
    range: SQLSTATE class 22 or 23), or one no database outage explains; the same write
    fails again, the others of its batch need not."""
    if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
        return True
    return not isinstance(
        exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError | StoreUnavailable
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


class PostgresStore:
    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        max_batch: int = 256,
        pool_size: int = 10,
        owner: str = "local",
        lease_s: float = 30.0,
        connect_wait_s: float = 0.0,
    ) -> None:
        """`connect_wait_s`: how long `open` waits for PostgreSQL to answer, retrying."""
        self._dsn = dsn
        self._connect_wait_s = connect_wait_s
        self._schema = schema
        self._owner = owner
        self._lease_s = lease_s
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._writes = GroupCommit(self._commit_batch, max_batch=max_batch, name="pg-writer")

    @property
    def batch_sizes(self) -> list[int]:
        return list(self._writes.batch_sizes)

    def observe_batches(self, callback: Callable[[int], None]) -> None:
        self._writes.on_batch = callback

    @property
    def owner(self) -> str:
        return self._owner

    async def open(self) -> None:
        """Connect (waiting up to `connect_wait_s` for the server, as one started beside the
        engine may still be starting) and run the migrations."""
        settings = {"search_path": self._schema} if self._schema else {}
        where = _server(self._dsn)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._connect_wait_s
        delay, tries = 0.25, 0
        while True:
            tries += 1
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._pool_size,
                    init=_init_connection,
                    server_settings=settings,
                )
                break
            except (OSError, asyncpg.PostgresError) as exc:
                if loop.time() + delay > give_up:
                    raise StoreUnavailable(
                        f"cannot connect to PostgreSQL at {where} ({tries} tries): {exc}"
                    ) from exc
                log.warning("PostgreSQL at %s: %s; trying again in %.1fs", where, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await self._migrate()
        self._writes.start()

    async def close(self) -> None:
        await self._writes.stop()
        if self._listener is not None:
            await self._listener.close()
        if self._pool is not None:
            await self._pool.close()

    async def abort(self) -> None:
        await self._writes.abort()
        if self._listener is not None:
            self._listener.terminate()
        if self._pool is not None:
            self._pool.terminate()

    async def on_new_orders(self, callback: Callable[[], None]) -> None:
        """Call `callback` when some replica stores an order nobody owns yet. Best effort:
        a lost listening connection is not re-opened, claimers' polling covers it."""
        settings = {"search_path": self._schema} if self._schema else {}
        try:
            self._listener = await asyncpg.connect(self._dsn, server_settings=settings)
            await self._listener.add_listener(NEW_ORDERS_CHANNEL, lambda *_: callback())
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("postgres: not listening for new orders (%s); polling only", exc)

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("store is not open")
        return self._pool

    async def _migrate(self) -> None:
        async with self._p().acquire() as conn:
            await migrate_postgres(conn, self._schema)

    # -- writes -------------------------------------------------------------------------

    async def create(self, order: Order, first: OrderEvent, *, owned: bool = True) -> None:
        await self._writes.create(order, first, owned)

    async def append(self, transition: Transition) -> None:
        await self._writes.append(transition)

    async def _commit_batch(self, batch: list[Write]) -> None:
        outcomes: dict[int, Exception | None] = {}
        appends = [(i, w) for i, w in enumerate(batch) if isinstance(w, AppendWrite)]
        # One statement for all the batch's status changes and one for their events,
        # instead of two round trips per write; per write when an order appears twice or
        # a cancellation (fenced on seq alone) is among them.
        ids = [w.transition.event.order_id for _, w in appends]
        set_based = len(set(ids)) == len(ids) and not any(
            w.transition.any_owner for _, w in appends
        )
        try:
            async with self._p().acquire() as conn, conn.transaction():
                for i, write in enumerate(batch):
                    if isinstance(write, CreateWrite) or not set_based:
                        outcomes[i] = await self._apply(conn, write)
                if set_based and appends:
                    outcomes.update(await self._append_many(conn, appends))
                if any(isinstance(w, CreateWrite) and not w.owned for w in batch):
                    # Delivered on commit: idle workers claim at once instead of polling.
                    await conn.execute("SELECT pg_notify($1, '')", NEW_ORDERS_CHANNEL)
        except Exception as exc:
            if _row_at_fault(exc):
                raise  # the group commit retries write by write: only that one fails
            for write in batch:
                fail(write, StoreUnavailable(f"PostgreSQL write failed: {exc}"))
            return
        for i, write in enumerate(batch):
            error = outcomes[i]
            if error is None:
                succeed(write)
            else:
                fail(write, error)

    async def _append_many(
        self, conn: asyncpg.Connection, appends: list[tuple[int, AppendWrite]]
    ) -> dict[int, Exception | None]:
        transitions = [w.transition for _, w in appends]
        ids = [t.event.order_id for t in transitions]
        updates = arrays([(*update_args(t), t.after_seq) for t in transitions])
        rows = await conn.fetch(UPDATE_MANY, ids, *updates, self._owner)
        updated = {r["order_id"] for r in rows}
        written = [
            ROWS.event_values(e, e.data)
            for t in transitions
            if t.event.order_id in updated
            for e in t.events
        ]
        if written:
            await conn.execute(INSERT_EVENTS, *arrays(written))
        return {
            i: None if t.event.order_id in updated else _seq_conflict(t)
            for (i, _), t in zip(appends, transitions, strict=True)
        }

    async def _apply(self, conn: asyncpg.Connection, write: Write) -> Exception | None:
        if isinstance(write, CreateWrite):
            o, e = write.order, write.first
            owner = self._owner if write.owned else None
            inserted = await conn.fetchval(
                INSERT_ORDER, *ROWS.order_values(o), owner, self._lease_s
            )
            if inserted is None:
                existing = await self._existing(conn, o)
                if existing is None:  # its key was freed since: nothing to point the caller to
                    return StoreConflict(
                        f"order {o.order_id} refused, no stored order holds its keys"
                    )
                return DuplicateOrder(existing)
            await self._insert_event(conn, e)
            return None
        assert isinstance(write, AppendWrite)
        t = write.transition
        fence = None if t.any_owner else self._owner
        updated = await conn.fetchval(
            UPDATE_ORDER, *update_args(t), t.event.order_id, t.after_seq, fence
        )
        if updated is None:
            return _seq_conflict(t)
        for e in t.events:
            await self._insert_event(conn, e)
        return None

    @staticmethod
    async def _insert_event(conn: asyncpg.Connection, e: OrderEvent) -> None:
        await conn.execute(INSERT_EVENT, *ROWS.event_values(e, e.data))

    @staticmethod
    async def _existing(conn: asyncpg.Connection, order: Order) -> Order | None:
        row = await conn.fetchrow(
            EXISTING,
            order.order_id,
            order.idempotency_key,
            order.client_order_id,
            order.client_id,
        )
        return None if row is None else ROWS.order(row)

    # -- reads --------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await self._p().fetch(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL read failed: {exc}") from exc
        return rows

    async def get(self, order_id: str) -> Order | None:
        rows = await self._fetch(f"SELECT {READ_SQL} FROM orders WHERE order_id = $1", order_id)
        return ROWS.order(rows[0]) if rows else None

    async def by_idempotency_key(self, key: str) -> Order | None:
        rows = await self._fetch(f"SELECT {READ_SQL} FROM orders WHERE idempotency_key = $1", key)
        return ROWS.order(rows[0]) if rows else None

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        # seq is a 32-bit integer, `after` any 18-digit number a client sends: compared as
        # bigint, a larger one finds nothing (as in SQLite) instead of failing to bind.
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM order_events"
            " WHERE order_id = $1 AND seq > $2::bigint ORDER BY seq",
            order_id,
            after,
        )
        return [event_from_record(r) for r in rows]

    async def find(self, query: OrderQuery) -> list[Order]:
        where: list[str] = ["true"]
        params: list[Any] = []

        def arg(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.statuses:
            where.append(f"status = ANY({arg([s.value for s in query.statuses])}::text[])")
        for column, value in (
            ("token_in", query.token_in),
            ("token_out", query.token_out),
            ("client_id", query.client_id),
        ):
            if value is not None:
                where.append(f"{column} = {arg(value)}")
        if query.created_from is not None:
            where.append(f"created_at >= {arg(timestamp(query.created_from))}")
        if query.created_to is not None:
            where.append(f"created_at < {arg(timestamp(query.created_to))}")
        if query.before is not None:
            at, order_id = query.before
            where.append(f"(created_at, order_id) < ({arg(timestamp(at))}, {arg(order_id)})")
        rows = await self._fetch(
            f"SELECT {READ_SQL} FROM orders WHERE {' AND '.join(where)}"
            f" ORDER BY created_at DESC, order_id DESC LIMIT {arg(query.limit)}",
            *params,
        )
        return [ROWS.order(r) for r in rows]

    async def last_seqs(self, order_ids: list[str]) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT order_id, last_seq FROM orders WHERE order_id = ANY($1::text[])", order_ids
        )
        return {r["order_id"]: r["last_seq"] for r in rows}

    async def count_by_status(self) -> dict[str, int]:
        rows = await self._fetch("SELECT status, count(*) AS n FROM orders GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    async def unfinished(self) -> list[Order]:
        rows = await self._fetch(
            f"SELECT {READ_SQL} FROM orders WHERE {UNFINISHED} ORDER BY created_at"
        )
        return [ROWS.order(r) for r in rows]

    async def ping(self) -> None:
        """Ready while PostgreSQL answers and, once a write failed (a full disk), until a
        probe write succeeds."""
        await self._fetch("SELECT 1")
        if self._writes.failing is None:
            return
        try:
            async with self._p().acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO write_probe VALUES ($1)", bytes(8192))
                await conn.execute("DELETE FROM write_probe")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"writes are failing: {exc}") from exc
        self._writes.failing = None

    # -- leases -------------------------------------------------------------------------

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        if limit <= 0:
            return []
        rows = await self._fetch(CLAIM, self._owner, self._lease_s, limit, own_too)
        return sorted((ROWS.order(r) for r in rows), key=lambda o: o.created_at)

    async def forget_idempotency_key(self, key: str) -> None:
        await self._count(
            "UPDATE orders SET idempotency_key = NULL WHERE idempotency_key = $1", key
        )

    async def renew(self, order_ids: list[str]) -> int:
        if not order_ids:
            return 0
        return await self._count(RENEW, self._owner, self._lease_s, order_ids)

    async def release(self) -> int:
        return await self._count(
            f"UPDATE orders SET owner = NULL, lease_until = NULL WHERE owner = $1 AND {UNFINISHED}",
            self._owner,
        )

    async def _count(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._p().execute(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL write failed: {exc}") from exc
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE <n>"


def _server(dsn: str) -> str:
    """host:port/database of a DSN, for messages: never its user or password."""
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


def _seq_conflict(t: Transition) -> SeqConflict:
    first = t.events[0]
    return SeqConflict(first.order_id, first.seq)

"""PostgreSQL store (asyncpg pool): the same contract as SQLite, for replicas.

Writes are grouped like SQLite's: one transaction per batch. Rule checks never raise inside
the transaction: the fenced UPDATE returns nothing when the seq is not next, the INSERT of a
duplicate order does nothing, so one bad write fails alone without rolling back the others.
A value PostgreSQL or the driver refuses does raise, and rolls the batch back: it is then
committed write by write (see group_commit), so that write still fails alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

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

log = logging.getLogger(__name__)


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(at: datetime) -> float:
    return at.timestamp()


ROWS = OrderRows(Dialect(u64_to_db=Decimal, u64_from_db=int, time_to_db=_ts, time_from_db=_seconds))
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
_READ = ", ".join(READ_COLUMNS)
_N = len(ORDER_COLUMNS)
_INSERT_ORDER = (
    f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}, owner, lease_until)"
    f" VALUES ({', '.join(f'${i}' for i in range(1, _N + 2))},"
    f" CASE WHEN ${_N + 1}::text IS NULL THEN NULL"
    f" ELSE now() + make_interval(secs => ${_N + 2}) END)"
    " ON CONFLICT DO NOTHING RETURNING order_id"
)
_INSERT_EVENT = f"INSERT INTO order_events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
# The WHERE clause is the fence: the update matches only if this event is the next one and
# this replica still owns the order. $1..$3: status, seq, updated_at; then UPDATE_COLUMNS.
_U = len(UPDATE_COLUMNS)
_UPDATE_ORDER = (
    "UPDATE orders SET status = $1, last_seq = $2, updated_at = $3, "
    + ", ".join(f"{c} = coalesce(${i}, {c})" for i, c in enumerate(UPDATE_COLUMNS, start=4))
    + f" WHERE order_id = ${_U + 4} AND last_seq = ${_U + 5}"
    + f" AND owner IS NOT DISTINCT FROM coalesce(${_U + 6}::text, owner)"
    " RETURNING order_id"
)
# The same for many orders at once, one array per column: order_id, then the arguments of
# the statement above in their order.
_UPDATE_MANY = (
    "UPDATE orders AS o SET status = u.status, last_seq = u.seq, updated_at = u.ts, "
    + ", ".join(f"{c} = coalesce(u.{c}, o.{c})" for c in UPDATE_COLUMNS)
    + " FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], "
    + ", ".join(f"${i}::{_ARRAY_TYPES[KINDS[c]]}[]" for i, c in enumerate(UPDATE_COLUMNS, start=5))
    + f") AS u(order_id, status, seq, ts, {', '.join(UPDATE_COLUMNS)})"
    + f" WHERE o.order_id = u.order_id AND o.last_seq = u.seq - 1 AND o.owner = ${_U + 5}"
    " RETURNING o.order_id"
)
_INSERT_EVENTS = f"""
INSERT INTO order_events ({EVENT_COLUMNS})
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[])
"""
# SKIP LOCKED: replicas claiming at the same moment split the orders instead of queueing
# on each other's row locks; each order goes to exactly one of them.
_CLAIM = f"""
UPDATE orders SET owner = $1, lease_until = now() + make_interval(secs => $2)
WHERE order_id IN (
    SELECT order_id FROM orders
    WHERE {UNFINISHED}
      AND (owner IS NULL OR lease_until < now() OR ($4 AND owner = $1))
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {_READ}
"""
NEW_ORDERS_CHANNEL = "order_engine_new_orders"


def _event_from_record(r: asyncpg.Record) -> OrderEvent:
    return ROWS.event(r, r["payload"])


def _update_args(t: Transition) -> tuple[Any, ...]:
    """Status, seq, updated_at, then UPDATE_COLUMNS: the order of both update statements."""
    e = t.event
    return (e.status.value, e.seq, _ts(e.ts), *ROWS.update_values(t.update))


def _arrays(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows of arguments turned into one array per column, for `unnest`."""
    return [list(column) for column in zip(*rows, strict=True)]


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
    ) -> None:
        self._dsn = dsn
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
        settings = {"search_path": self._schema} if self._schema else {}
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                init=_init_connection,
                server_settings=settings,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
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
        events = [w.transition.event for _, w in appends]
        ids = [e.order_id for e in events]
        updates = _arrays([_update_args(w.transition) for _, w in appends])
        rows = await conn.fetch(_UPDATE_MANY, ids, *updates, self._owner)
        updated = {r["order_id"] for r in rows}
        written = [ROWS.event_values(e, e.data) for e in events if e.order_id in updated]
        if written:
            await conn.execute(_INSERT_EVENTS, *_arrays(written))
        return {
            i: None if e.order_id in updated else SeqConflict(e.order_id, e.seq)
            for (i, _), e in zip(appends, events, strict=True)
        }

    async def _apply(self, conn: asyncpg.Connection, write: Write) -> Exception | None:
        if isinstance(write, CreateWrite):
            o, e = write.order, write.first
            owner = self._owner if write.owned else None
            inserted = await conn.fetchval(
                _INSERT_ORDER, *ROWS.order_values(o), owner, self._lease_s
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
        e = write.transition.event
        fence = None if write.transition.any_owner else self._owner
        updated = await conn.fetchval(
            _UPDATE_ORDER, *_update_args(write.transition), e.order_id, e.seq - 1, fence
        )
        if updated is None:
            return SeqConflict(e.order_id, e.seq)
        await self._insert_event(conn, e)
        return None

    @staticmethod
    async def _insert_event(conn: asyncpg.Connection, e: OrderEvent) -> None:
        await conn.execute(_INSERT_EVENT, *ROWS.event_values(e, e.data))

    @staticmethod
    async def _existing(conn: asyncpg.Connection, order: Order) -> Order | None:
        row = await conn.fetchrow(
            f"SELECT {_READ} FROM orders WHERE order_id = $1"
            " OR (idempotency_key IS NOT NULL AND idempotency_key = $2)"
            " OR (client_order_id IS NOT NULL AND client_order_id = $3"
            " AND coalesce(client_id, '') = coalesce($4, '')) LIMIT 1",
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
        rows = await self._fetch(f"SELECT {_READ} FROM orders WHERE order_id = $1", order_id)
        return ROWS.order(rows[0]) if rows else None

    async def by_idempotency_key(self, key: str) -> Order | None:
        rows = await self._fetch(f"SELECT {_READ} FROM orders WHERE idempotency_key = $1", key)
        return ROWS.order(rows[0]) if rows else None

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM order_events"
            " WHERE order_id = $1 AND seq > $2 ORDER BY seq",
            order_id,
            after,
        )
        return [_event_from_record(r) for r in rows]

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
            where.append(f"created_at >= {arg(_ts(query.created_from))}")
        if query.created_to is not None:
            where.append(f"created_at < {arg(_ts(query.created_to))}")
        if query.before is not None:
            at, order_id = query.before
            where.append(f"(created_at, order_id) < ({arg(_ts(at))}, {arg(order_id)})")
        rows = await self._fetch(
            f"SELECT {_READ} FROM orders WHERE {' AND '.join(where)}"
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
            f"SELECT {_READ} FROM orders WHERE {UNFINISHED} ORDER BY created_at"
        )
        return [ROWS.order(r) for r in rows]

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    # -- leases -------------------------------------------------------------------------

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        if limit <= 0:
            return []
        rows = await self._fetch(_CLAIM, self._owner, self._lease_s, limit, own_too)
        return sorted((ROWS.order(r) for r in rows), key=lambda o: o.created_at)

    async def forget_idempotency_key(self, key: str) -> None:
        await self._count(
            "UPDATE orders SET idempotency_key = NULL WHERE idempotency_key = $1", key
        )

    async def renew(self, order_ids: list[str]) -> int:
        if not order_ids:
            return 0
        # SKIP LOCKED: a row locked by a batch being written now is renewed next time;
        # waiting for it could deadlock against that batch (rows locked in another order).
        return await self._count(
            "UPDATE orders SET lease_until = now() + make_interval(secs => $2)"
            " WHERE order_id IN (SELECT order_id FROM orders WHERE owner = $1"
            f" AND order_id = ANY($3::text[]) AND {UNFINISHED} FOR UPDATE SKIP LOCKED)",
            self._owner,
            self._lease_s,
            order_ids,
        )

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

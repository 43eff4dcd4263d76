"""PostgreSQL store (asyncpg pool): the same contract as SQLite, for replicas.

Writes are grouped like SQLite's: one transaction per batch. Rule checks never raise inside
the transaction: the fenced UPDATE returns nothing when the seq is not next, the INSERT of a
duplicate order does nothing, so one bad write fails alone without rolling back the others.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from order_engine.orders import Order, OrderEvent, Status
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
    f"INSERT INTO orders ({_ORDER_COLUMNS}, owner, lease_until) VALUES"
    " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,"
    " $21, $22, CASE WHEN $22::text IS NULL THEN NULL ELSE now() + make_interval(secs => $23) END)"
    " ON CONFLICT DO NOTHING RETURNING order_id"
)
_INSERT_EVENT = (
    "INSERT INTO order_events (order_id, seq, status, message, payload, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)
# The WHERE clause is the fence: the update matches only if this event is the next one and
# this replica still owns the order.
_UPDATE_ORDER = """
UPDATE orders SET
    status = $1, last_seq = $2, updated_at = $3,
    attempts = coalesce($4, attempts),
    dex = coalesce($5, dex),
    tx_hash = coalesce($6, tx_hash),
    executed_price = coalesce($7, executed_price),
    amount_out = coalesce($8, amount_out),
    min_amount_out = coalesce($9, min_amount_out),
    error_code = coalesce($10, error_code),
    error_message = coalesce($11, error_message)
WHERE order_id = $12 AND last_seq = $13 AND owner = $14
RETURNING order_id
"""
_UPDATE_MANY = """
UPDATE orders AS o SET
    status = u.status, last_seq = u.seq, updated_at = u.ts,
    attempts = coalesce(u.attempts, o.attempts),
    dex = coalesce(u.dex, o.dex),
    tx_hash = coalesce(u.tx_hash, o.tx_hash),
    executed_price = coalesce(u.executed_price, o.executed_price),
    amount_out = coalesce(u.amount_out, o.amount_out),
    min_amount_out = coalesce(u.min_amount_out, o.min_amount_out),
    error_code = coalesce(u.error_code, o.error_code),
    error_message = coalesce(u.error_message, o.error_message)
FROM unnest(
    $1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::text[],
    $8::float8[], $9::numeric[], $10::numeric[], $11::text[], $12::text[]
) AS u(order_id, seq, status, ts, attempts, dex, tx_hash, executed_price, amount_out,
       min_amount_out, error_code, error_message)
WHERE o.order_id = u.order_id AND o.last_seq = u.seq - 1 AND o.owner = $13
RETURNING o.order_id
"""
_INSERT_EVENTS = """
INSERT INTO order_events (order_id, seq, status, message, payload, created_at)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[])
"""
_UNFINISHED = "status NOT IN ('confirmed', 'failed')"
# SKIP LOCKED: replicas claiming at the same moment split the orders instead of queueing
# on each other's row locks; each order goes to exactly one of them.
_CLAIM = f"""
UPDATE orders SET owner = $1, lease_until = now() + make_interval(secs => $2)
WHERE order_id IN (
    SELECT order_id FROM orders
    WHERE {_UNFINISHED}
      AND (owner IS NULL OR lease_until < now() OR ($4 AND owner = $1))
    ORDER BY created_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING {_READ_COLUMNS}
"""
NEW_ORDERS_CHANNEL = "order_engine_new_orders"
# Any constant shared by every replica: migrations run under this advisory lock, so two
# replicas starting together do not both apply them.
_MIGRATION_LOCK = zlib.crc32(b"order_engine.migrations")


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _dec(value: int | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _int(value: Decimal | None) -> int | None:
    return None if value is None else int(value)


def _order_from_record(r: asyncpg.Record) -> Order:
    return Order(
        order_id=r["order_id"],
        token_in=r["token_in"],
        token_out=r["token_out"],
        amount=int(r["amount"]),
        slippage_bps=r["slippage_bps"],
        status=Status(r["status"]),
        last_seq=r["last_seq"],
        attempts=r["attempts"],
        created_at=r["created_at"].timestamp(),
        updated_at=r["updated_at"].timestamp(),
        client_order_id=r["client_order_id"],
        idempotency_key=r["idempotency_key"],
        request_hash=r["request_hash"],
        dex=r["dex"],
        tx_hash=r["tx_hash"],
        executed_price=r["executed_price"],
        amount_out=_int(r["amount_out"]),
        min_amount_out=_int(r["min_amount_out"]),
        error_code=r["error_code"],
        error_message=r["error_message"],
        client_id=r["client_id"],
        owner=r["owner"],
    )


def _event_from_record(r: asyncpg.Record) -> OrderEvent:
    return OrderEvent(
        order_id=r["order_id"],
        seq=r["seq"],
        status=Status(r["status"]),
        message=r["message"],
        ts=r["created_at"].timestamp(),
        data=r["payload"],
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
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
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
            raise StoreError("store is not open")
        return self._pool

    async def _migrate(self) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if self._schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            applied = {
                r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
            }
            for version, sql in load_migrations("postgres"):
                if version not in applied:
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                    log.info("postgres: applied migration %03d", version)

    # -- writes -------------------------------------------------------------------------

    async def create(self, order: Order, first: OrderEvent, *, owned: bool = True) -> None:
        await self._writes.create(order, first, owned)

    async def append(self, transition: Any) -> None:
        await self._writes.append(transition)

    async def _commit_batch(self, batch: list[Write]) -> None:
        outcomes: dict[int, Exception | None] = {}
        appends = [(i, w) for i, w in enumerate(batch) if isinstance(w, AppendWrite)]
        # One statement for all the batch's status changes and one for their events,
        # instead of two round trips per write; per write when an order appears twice.
        ids = [w.transition.event.order_id for _, w in appends]
        set_based = len(set(ids)) == len(ids)
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
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            for write in batch:
                fail(write, StoreError(f"PostgreSQL write failed: {exc}"))
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
        updates = [w.transition.update for _, w in appends]
        rows = await conn.fetch(
            _UPDATE_MANY,
            [e.order_id for e in events],
            [e.seq for e in events],
            [e.status.value for e in events],
            [_ts(e.ts) for e in events],
            [u.attempts for u in updates],
            [u.dex for u in updates],
            [u.tx_hash for u in updates],
            [u.executed_price for u in updates],
            [_dec(u.amount_out) for u in updates],
            [_dec(u.min_amount_out) for u in updates],
            [u.error_code for u in updates],
            [u.error_message for u in updates],
            self._owner,
        )
        updated = {r["order_id"] for r in rows}
        written = [e for e in events if e.order_id in updated]
        if written:
            await conn.execute(
                _INSERT_EVENTS,
                [e.order_id for e in written],
                [e.seq for e in written],
                [e.status.value for e in written],
                [e.message for e in written],
                [e.data for e in written],
                [_ts(e.ts) for e in written],
            )
        return {
            i: None if e.order_id in updated else SeqConflict(e.order_id, e.seq)
            for (i, _), e in zip(appends, events, strict=True)
        }

    async def _apply(self, conn: asyncpg.Connection, write: Write) -> Exception | None:
        if isinstance(write, CreateWrite):
            o, e = write.order, write.first
            inserted = await conn.fetchval(
                _INSERT_ORDER,
                o.order_id,
                o.token_in,
                o.token_out,
                Decimal(o.amount),
                o.status.value,
                o.last_seq,
                o.attempts,
                o.slippage_bps,
                o.dex,
                o.executed_price,
                o.tx_hash,
                _dec(o.amount_out),
                _dec(o.min_amount_out),
                o.error_code,
                o.error_message,
                o.client_order_id,
                o.idempotency_key,
                o.request_hash,
                _ts(o.created_at),
                _ts(o.updated_at),
                o.client_id,
                self._owner if write.owned else None,
                self._lease_s,
            )
            if inserted is None:
                existing = await self._existing(conn, o)
                return DuplicateOrder(existing) if existing else StoreError("insert refused")
            await self._insert_event(conn, e)
            return None
        assert isinstance(write, AppendWrite)
        e, u = write.transition.event, write.transition.update
        updated = await conn.fetchval(
            _UPDATE_ORDER,
            e.status.value,
            e.seq,
            _ts(e.ts),
            u.attempts,
            u.dex,
            u.tx_hash,
            u.executed_price,
            _dec(u.amount_out),
            _dec(u.min_amount_out),
            u.error_code,
            u.error_message,
            e.order_id,
            e.seq - 1,
            self._owner,
        )
        if updated is None:
            return SeqConflict(e.order_id, e.seq)
        await self._insert_event(conn, e)
        return None

    @staticmethod
    async def _insert_event(conn: asyncpg.Connection, e: OrderEvent) -> None:
        await conn.execute(
            _INSERT_EVENT, e.order_id, e.seq, e.status.value, e.message, e.data, _ts(e.ts)
        )

    @staticmethod
    async def _existing(conn: asyncpg.Connection, order: Order) -> Order | None:
        row = await conn.fetchrow(
            f"SELECT {_READ_COLUMNS} FROM orders WHERE order_id = $1"
            " OR (idempotency_key IS NOT NULL AND idempotency_key = $2)"
            " OR (client_order_id IS NOT NULL AND client_order_id = $3"
            " AND coalesce(client_id, '') = coalesce($4, '')) LIMIT 1",
            order.order_id,
            order.idempotency_key,
            order.client_order_id,
            order.client_id,
        )
        return None if row is None else _order_from_record(row)

    # -- reads --------------------------------------------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await self._p().fetch(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL read failed: {exc}") from exc
        return rows

    async def get(self, order_id: str) -> Order | None:
        rows = await self._fetch(
            f"SELECT {_READ_COLUMNS} FROM orders WHERE order_id = $1", order_id
        )
        return _order_from_record(rows[0]) if rows else None

    async def by_idempotency_key(self, key: str) -> Order | None:
        rows = await self._fetch(
            f"SELECT {_READ_COLUMNS} FROM orders WHERE idempotency_key = $1", key
        )
        return _order_from_record(rows[0]) if rows else None

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        rows = await self._fetch(
            "SELECT order_id, seq, status, message, payload, created_at FROM order_events"
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
            f"SELECT {_READ_COLUMNS} FROM orders WHERE {' AND '.join(where)}"
            f" ORDER BY created_at DESC, order_id DESC LIMIT {arg(query.limit)}",
            *params,
        )
        return [_order_from_record(r) for r in rows]

    async def last_seqs(self, order_ids: list[str]) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT order_id, last_seq FROM orders WHERE order_id = ANY($1::text[])", order_ids
        )
        return {r["order_id"]: r["last_seq"] for r in rows}

    async def unfinished(self) -> list[Order]:
        rows = await self._fetch(
            f"SELECT {_READ_COLUMNS} FROM orders"
            " WHERE status NOT IN ('confirmed', 'failed') ORDER BY created_at"
        )
        return [_order_from_record(r) for r in rows]

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    # -- leases -------------------------------------------------------------------------

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        if limit <= 0:
            return []
        rows = await self._fetch(_CLAIM, self._owner, self._lease_s, limit, own_too)
        return sorted((_order_from_record(r) for r in rows), key=lambda o: o.created_at)

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
            f" AND order_id = ANY($3::text[]) AND {_UNFINISHED} FOR UPDATE SKIP LOCKED)",
            self._owner,
            self._lease_s,
            order_ids,
        )

    async def release(self) -> int:
        return await self._count(
            "UPDATE orders SET owner = NULL, lease_until = NULL"
            f" WHERE owner = $1 AND {_UNFINISHED}",
            self._owner,
        )

    async def _count(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._p().execute(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL write failed: {exc}") from exc
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE <n>"

"""The Store contract, against a real database file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from order_engine.orders import Order, OrderEvent, OrderUpdate, Status, Transition
from order_engine.store import (
    DuplicateOrder,
    OrderQuery,
    SeqConflict,
    Store,
    StoreConflict,
    StoreError,
    store_from_url,
)
from order_engine.store.migrations import load_migrations
from order_engine.store.rows import READ_COLUMNS
from order_engine.store.sqlite import SQLiteStore
from tests.support.services import POSTGRES_URL, postgres_schema


def new_order(n: int = 0, key: str | None = None) -> tuple[Order, OrderEvent]:
    order_id = f"00000000-0000-4000-8000-{n:012d}"
    order = Order(
        order_id=order_id,
        token_in="SOL",
        token_out="USDC",
        amount=2**64 - 1,
        slippage_bps=50,
        status=Status.PENDING,
        last_seq=1,
        attempts=0,
        created_at=1000.0 + n,
        updated_at=1000.0 + n,
        idempotency_key=key,
        request_hash="h",
    )
    first = OrderEvent(order_id, 1, Status.PENDING, "queued", 1000.0 + n, {"amount": "1.5"})
    return order, first


def event(order_id: str, seq: int, status: Status, **data: object) -> OrderEvent:
    return OrderEvent(order_id, seq, status, status.value, 2000.0 + seq, dict(data))


async def test_create_then_read_back(store: Store) -> None:
    order, first = new_order()
    await store.create(order, first)
    assert await store.get(order.order_id) == order
    assert await store.events(order.order_id) == [first]
    assert await store.unfinished() == [order]


async def test_append_updates_order_and_event_together(store: Store) -> None:
    order, first = new_order()
    await store.create(order, first)
    await store.append(
        Transition(event(order.order_id, 2, Status.ROUTING, attempt=1), OrderUpdate(attempts=1))
    )
    await store.append(
        Transition(
            event(order.order_id, 3, Status.FAILED),
            OrderUpdate(error_code="no_route", error_message="none", amount_out=2**64 - 1),
        )
    )
    stored = await store.get(order.order_id)
    assert stored is not None
    assert (stored.status, stored.last_seq, stored.attempts) == (Status.FAILED, 3, 1)
    assert (stored.error_code, stored.amount_out) == ("no_route", 2**64 - 1)
    assert [e.seq for e in await store.events(order.order_id)] == [1, 2, 3]
    assert [e.seq for e in await store.events(order.order_id, after=2)] == [3]
    assert await store.unfinished() == []


async def test_events_after_any_seq_a_client_may_name(store: Store) -> None:
    """`after` comes from clients (up to 18 digits): past a 32-bit seq it finds nothing,
    on either store (PostgreSQL's seq column is an INTEGER)."""
    order, first = new_order()
    await store.create(order, first)
    for after in (2**31, 10**18 - 1):
        assert await store.events(order.order_id, after=after) == []


async def test_seq_must_be_the_next_one(store: Store) -> None:
    order, first = new_order()
    await store.create(order, first)
    with pytest.raises(SeqConflict):
        await store.append(Transition(event(order.order_id, 3, Status.ROUTING)))
    with pytest.raises(SeqConflict):
        await store.append(Transition(event(order.order_id, 1, Status.ROUTING)))
    await store.append(Transition(event(order.order_id, 2, Status.ROUTING)))
    with pytest.raises(SeqConflict):  # a second writer of the same seq loses
        await store.append(Transition(event(order.order_id, 2, Status.BUILDING)))
    stored = await store.get(order.order_id)
    assert stored is not None
    assert stored.status is Status.ROUTING
    assert [e.status for e in await store.events(order.order_id)] == [
        Status.PENDING,
        Status.ROUTING,
    ]


async def test_stages_written_together_are_all_appended_in_one_write(store: Store) -> None:
    """Routing, building and submitted in one transition: every event stored in seq order,
    the order at the last one's status with every column any of them set."""
    order, first = new_order()
    await store.create(order, first)
    together = Transition(
        event(order.order_id, 4, Status.SUBMITTED, txHash="sig"),
        OrderUpdate(attempts=1, dex="Meteora", min_amount_out=7, tx_hash="sig"),
        earlier=(
            event(order.order_id, 2, Status.ROUTING, attempt=1),
            event(order.order_id, 3, Status.BUILDING, dex="Meteora"),
        ),
    )
    await store.append(together)
    stored = await store.get(order.order_id)
    assert stored == order.apply(together)
    assert (stored.status, stored.last_seq, stored.attempts) == (Status.SUBMITTED, 4, 1)
    assert (stored.dex, stored.min_amount_out, stored.tx_hash) == ("Meteora", 7, "sig")
    assert await store.events(order.order_id) == [first, *together.events]


async def test_stages_written_together_are_fenced_on_the_first_seq(store: Store) -> None:
    order, first = new_order()
    await store.create(order, first)
    await store.append(Transition(event(order.order_id, 2, Status.ROUTING)))
    late = Transition(  # written by a replica that did not see seq 2
        event(order.order_id, 3, Status.BUILDING),
        earlier=(event(order.order_id, 2, Status.ROUTING),),
    )
    with pytest.raises(SeqConflict) as refused:
        await store.append(late)
    assert refused.value.seq == 2
    assert [e.seq for e in await store.events(order.order_id)] == [1, 2]
    # Many orders in one batch, one of them fenced off: the others land whole.
    orders = [new_order(n) for n in range(1, 6)]
    await asyncio.gather(*(store.create(o, f) for o, f in orders))
    writes = [
        store.append(
            Transition(
                event(o.order_id, 3, Status.BUILDING),
                earlier=(event(o.order_id, 2 if n != 3 else 5, Status.ROUTING),),
            )
        )
        for n, (o, _) in enumerate(orders)
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert [isinstance(r, SeqConflict) for r in results] == [n == 3 for n in range(5)]
    for n, (o, _) in enumerate(orders):
        assert len(await store.events(o.order_id)) == (1 if n == 3 else 3)


async def test_a_bad_write_fails_alone_in_its_batch(store: Store) -> None:
    """Concurrent writes share a commit; the one that breaks the seq rule fails, the others
    land."""
    orders = [new_order(n) for n in range(10)]
    await asyncio.gather(*(store.create(o, f) for o, f in orders))
    writes = [
        store.append(Transition(event(o.order_id, 2 if n != 4 else 5, Status.ROUTING)))
        for n, (o, _) in enumerate(orders)
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert [isinstance(r, SeqConflict) for r in results] == [n == 4 for n in range(10)]
    for n, (o, _) in enumerate(orders):
        assert len(await store.events(o.order_id)) == (1 if n == 4 else 2)


async def test_writes_are_grouped_into_batches(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "batch.db", synchronous="NORMAL")
    await store.open()
    try:
        orders = [new_order(n) for n in range(200)]
        await asyncio.gather(*(store.create(o, f) for o, f in orders))
        assert sum(store.batch_sizes) == 200
        assert max(store.batch_sizes) > 1  # 200 concurrent writes did not take 200 commits
    finally:
        await store.close()


async def test_duplicate_idempotency_key_is_refused(store: Store) -> None:
    order, first = new_order(1, key="k-1")
    await store.create(order, first)
    other, other_first = new_order(2, key="k-1")
    with pytest.raises(DuplicateOrder) as caught:
        await store.create(other, other_first)
    assert caught.value.existing == order
    assert await store.by_idempotency_key("k-1") == order
    assert await store.get(other.order_id) is None


async def test_data_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/reopen.db"
    first_store = store_from_url(url)
    await first_store.open()
    order, first = new_order()
    await first_store.create(order, first)
    await first_store.close()
    second_store = store_from_url(url)
    await second_store.open()  # migrations run again: must be a no-op
    try:
        assert await second_store.get(order.order_id) == order
    finally:
        await second_store.close()


async def test_unknown_order_reads_empty(store: Store) -> None:
    assert await store.get("00000000-0000-4000-8000-999999999999") is None
    assert await store.events("00000000-0000-4000-8000-999999999999") == []


async def test_find_pages_newest_first_and_stays_stable_under_inserts(store: Store) -> None:
    for n in range(5):
        await store.create(*new_order(n))
    first = await store.find(OrderQuery(limit=2))
    assert [o.created_at for o in first] == [1004.0, 1003.0]
    await store.create(*new_order(9))  # a newer order arrives between pages
    cursor = (first[-1].created_at, first[-1].order_id)
    rest = await store.find(OrderQuery(limit=10, before=cursor))
    assert [o.created_at for o in rest] == [1002.0, 1001.0, 1000.0]


async def test_find_filters(store: Store) -> None:
    for n in range(4):
        order, first = new_order(n)
        if n % 2:
            order = replace(order, token_in="USDC", token_out="SOL")
        await store.create(order, first)
    await store.append(Transition(event(new_order(0)[0].order_id, 2, Status.FAILED), OrderUpdate()))
    usdc = await store.find(OrderQuery(token_in="USDC"))
    assert [o.created_at for o in usdc] == [1003.0, 1001.0]
    failed = await store.find(OrderQuery(statuses=(Status.FAILED,)))
    assert [o.created_at for o in failed] == [1000.0]
    window = await store.find(OrderQuery(created_from=1001.0, created_to=1003.0))
    assert [o.created_at for o in window] == [1002.0, 1001.0]
    assert await store.find(OrderQuery(client_id="nobody")) == []


async def test_last_valid_slot_is_written_and_read_back(store: Store) -> None:
    order, first = new_order()
    await store.create(order, first)
    await store.append(Transition(event(order.order_id, 2, Status.ROUTING)))
    await store.append(Transition(event(order.order_id, 3, Status.BUILDING)))
    await store.append(
        Transition(
            event(order.order_id, 4, Status.SUBMITTED, lastValidSlot=123),
            OrderUpdate(tx_hash="sig", last_valid_slot=123),
        )
    )
    stored = await store.get(order.order_id)
    assert stored is not None
    assert (stored.tx_hash, stored.last_valid_slot) == ("sig", 123)
    assert [o.last_valid_slot for o in await store.unfinished()] == [123]
    assert [o.last_valid_slot for o in await store.claim(10, own_too=True)] == [123]
    # An event that does not set it leaves it as it is, like every update column.
    await store.append(Transition(event(order.order_id, 5, Status.ROUTING), OrderUpdate()))
    stored = await store.get(order.order_id)
    assert stored is not None and stored.last_valid_slot == 123


async def test_last_valid_slot_is_stored_on_create(store: Store) -> None:
    order, first = new_order()
    order = replace(order, last_valid_slot=2**40)
    await store.create(order, first)
    assert await store.get(order.order_id) == order


async def outcome(write: Awaitable[None]) -> str:
    try:
        await write
    except StoreError:
        return "outage"
    except StoreConflict:
        return "conflict"
    return "written"


async def test_a_broken_rule_is_a_conflict_not_an_outage(store: Store) -> None:
    """An outage handler (`except StoreError`) must never swallow a refused write: the
    store is up, and retrying the same write cannot succeed."""
    order, first = new_order(1, key="k-1")
    await store.create(order, first)
    late = event(order.order_id, 5, Status.ROUTING)
    assert await outcome(store.create(*new_order(2, key="k-1"))) == "conflict"
    assert await outcome(store.append(Transition(late))) == "conflict"
    assert await outcome(store.append(Transition(event(order.order_id, 2, Status.ROUTING)))) == (
        "written"
    )


async def test_a_closed_store_is_an_outage(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path}/closed.db")
    await store.open()
    order, first = new_order()
    await store.create(order, first)
    await store.close()
    assert await outcome(store.append(Transition(event(order.order_id, 2, Status.ROUTING)))) == (
        "outage"
    )
    with pytest.raises(StoreError):
        await store.get(order.order_id)


# -- the schema --------------------------------------------------------------------------

# A database as migrations 1-4 left it; `run` executes one statement, `at` spells epoch
# seconds as the dialect stores them.
Legacy = tuple[str, Callable[[str], Awaitable[None]], Callable[[float], str]]


@pytest.fixture(params=["sqlite", "postgres"])
async def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Legacy]:
    dialect: str = request.param
    versions = [(v, sql) for v, sql in load_migrations(dialect) if v <= 4]
    if dialect == "sqlite":
        conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)"
        )
        for version, sql in versions:
            for statement in sql.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))

        async def run_sqlite(sql: str) -> None:
            conn.execute(sql)

        yield f"sqlite:///{tmp_path}/old.db", run_sqlite, str
        conn.close()
        return
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(postgres_schema())
        schema = parse_qs(urlsplit(url).query)["schema"][0]
        pg = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
        stack.push_async_callback(pg.close)
        await pg.execute(f'CREATE SCHEMA "{schema}"')
        await pg.execute(
            "CREATE TABLE schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, sql in versions:
            await pg.execute(sql)
            await pg.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)

        async def run_postgres(sql: str) -> None:
            await pg.execute(sql)

        yield url, run_postgres, lambda seconds: f"to_timestamp({seconds})"


async def test_every_order_field_has_its_column(legacy: Legacy) -> None:
    """A field added to Order without its migration fails here, by name."""
    url, _, _ = legacy
    store = store_from_url(url)
    await store.open()
    await store.close()
    if url.startswith("sqlite"):
        conn = sqlite3.connect(urlsplit(url).path.removeprefix("/"))
        columns = {row[1] for row in conn.execute("PRAGMA table_info(orders)")}
        conn.close()
    else:
        schema = parse_qs(urlsplit(url).query)["schema"][0]
        pg = await asyncpg.connect(POSTGRES_URL)
        rows = await pg.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = 'orders'",
            schema,
        )
        await pg.close()
        columns = {r["column_name"] for r in rows}
    assert columns == {*READ_COLUMNS, "lease_until"}


async def test_migration_takes_last_valid_slot_from_the_last_submitted_event(
    legacy: Legacy,
) -> None:
    url, run, at = legacy
    payloads = {
        # status, then the payload of each submitted event, oldest first
        "1": ("submitted", ['{"lastValidSlot": 111}', '{"lastValidSlot": 222}']),
        "2": ("submitted", ['{"txHash": "before slots were recorded"}']),
        "3": ("submitted", ['{"lastValidSlot": "not a slot"}']),
        "4": ("confirmed", ['{"lastValidSlot": 444}']),
        "5": ("routing", ['{"lastValidSlot": 555}']),
    }
    for n, (status, sent) in payloads.items():
        order_id = f"00000000-0000-4000-8000-00000000000{n}"
        await run(
            "INSERT INTO orders (order_id, token_in, token_out, amount, status, last_seq,"
            " slippage_bps, created_at, updated_at) VALUES"
            f" ('{order_id}', 'SOL', 'USDC', '1', '{status}', {len(sent) + 1}, 50,"
            f" {at(1000.0 + int(n))}, {at(1000.0)})"
        )
        statuses = ["pending", *(["submitted"] * len(sent))]
        bodies = ["{}", *sent]
        for seq, (event_status, payload) in enumerate(zip(statuses, bodies, strict=True), 1):
            await run(
                "INSERT INTO order_events (order_id, seq, status, message, payload, created_at)"
                f" VALUES ('{order_id}', {seq}, '{event_status}', '', '{payload}', {at(1000.0)})"
            )
    store = store_from_url(url)
    await store.open()
    try:
        slots = {o.order_id[-1]: o.last_valid_slot for o in await store.find(OrderQuery())}
    finally:
        await store.close()
    assert slots == {"1": 222, "2": None, "3": None, "4": None, "5": None}

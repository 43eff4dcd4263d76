"""One client paging through the history cannot stall others' reads (issue 14 item 5): its
filters are answered from an index in paging order (SQLite's query plan for the store's own
history query), and SQLite reads history on a connection of its own, so an order's lookup
never queues behind history pages."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from order_engine.orders import Order, OrderEvent, Status
from order_engine.store import OrderQuery, store_from_url
from order_engine.store.sqlite_sql import find_sql


@pytest.mark.parametrize(
    "query",
    [
        OrderQuery(statuses=(Status.FAILED,), limit=500),
        OrderQuery(statuses=(Status.FAILED,), before=(1000.0, "z"), limit=500),
        OrderQuery(client_id="alice", limit=500),
        OrderQuery(client_id="alice", statuses=(Status.FAILED,), limit=500),
    ],
    ids=["status", "status-next-page", "client", "client-and-status"],
)
async def test_a_history_filter_reads_an_index_in_paging_order(
    tmp_path: Path, query: OrderQuery
) -> None:
    path = tmp_path / "orders.db"
    store = store_from_url(f"sqlite:///{path}")
    await store.open()  # migrated as the engine would
    await store.close()
    sql, params = find_sql(query)
    with sqlite3.connect(path) as conn:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert all(step.startswith("SEARCH orders USING INDEX") for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


async def test_a_lookup_does_not_queue_behind_history_pages(tmp_path: Path) -> None:
    store = store_from_url(f"sqlite:///{tmp_path}/orders.db", sqlite_synchronous="OFF")
    await store.open()
    try:

        async def create(n: int) -> None:
            at = 1_000.0 + n
            order = Order(
                f"00000000-0000-4000-8000-{n:012d}",
                "SOL",
                "USDC",
                10**9,
                50,
                Status.FAILED,
                1,
                0,
                at,
                at,
            )
            await store.create(order, OrderEvent(order.order_id, 1, Status.PENDING, "", at, {}))

        await asyncio.gather(*(create(n) for n in range(1_000)))
        done: list[str] = []

        async def page(n: int) -> None:
            await store.find(OrderQuery(statuses=(Status.FAILED,), limit=500))
            done.append(f"page {n}")

        async def lookup() -> None:
            assert await store.get("00000000-0000-4000-8000-000000000007") is not None
            done.append("lookup")

        pages = [asyncio.create_task(page(n)) for n in range(20)]
        await asyncio.sleep(0)  # every page is asked for before the lookup
        await asyncio.gather(*pages, lookup())
        # One connection for both would answer the 20 pages of 500 orders first, in order.
        assert done.index("lookup") < 10, done
    finally:
        await store.close()

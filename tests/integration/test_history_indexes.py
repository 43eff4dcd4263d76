"""History filters are answered from an index in paging order (issue 14 item 5): a status
filter, with or without a client's, reads only the rows it returns instead of scanning and
sorting every order. SQLite's query plan for the store's own history query."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from order_engine.orders import Status
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

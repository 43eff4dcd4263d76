"""GET /api/orders fuzzed over both stores at once: the same orders in SQLite and in
PostgreSQL, the same hypothesis-made query to each, and the same answer from each (status,
error code, the orders of every page and the cursors between them). Never a 5xx."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from order_engine.app import build_app
from order_engine.orders import Order, OrderEvent, Status
from order_engine.store import store_from_url
from order_engine.venues import SimulatedMarket
from tests.support.factories import make_settings
from tests.support.services import postgres_schema

Client = TestClient[Any, Application]

# Times both stores hold exactly (whole microseconds a double represents): the first and
# the last second the API knows, ties, and a recent moment.
TIMES = [0.0, 0.5, 1000.0, 1000.0, 1_700_000_000.25, 1_700_000_000.25, 253_402_300_799.0]
TOKENS = [("SOL", "USDC"), ("USDC", "SOL"), ("SOL", "JUP"), ("BONK", "USDC")]
STATUSES = [Status.CONFIRMED, Status.FAILED, Status.CANCELLED, Status.EXPIRED]
ORDERS = [
    Order(
        order_id=str(uuid.UUID(int=(n * 0x9E3779B97F4A7C15) % 2**128, version=4)),
        token_in=TOKENS[n % len(TOKENS)][0],
        token_out=TOKENS[n % len(TOKENS)][1],
        amount=10**9 + n,
        slippage_bps=50,
        status=STATUSES[n % len(STATUSES)],  # finished: the engines leave them as they are
        last_seq=1,
        attempts=0,
        created_at=TIMES[n % len(TIMES)],
        updated_at=TIMES[n % len(TIMES)],
    )
    for n in range(1, 23)
]


@dataclass
class Pair:
    sqlite: Client
    postgres: Client


async def seeded(url: str) -> str:
    store = store_from_url(url)
    await store.open()
    try:
        for order in ORDERS:
            first = OrderEvent(order.order_id, 1, order.status, "seeded", order.created_at, {})
            await store.create(order, first, owned=False)
    finally:
        await store.close()
    return url


@pytest.fixture
async def pair(aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket) -> AsyncIterator[Pair]:
    lite = await seeded(f"sqlite:///{tmp_path}/orders.db")
    async with postgres_schema() as url:
        clients = [
            await aiohttp_client(
                build_app(make_settings(tmp_path / name, store={"url": store}), market=market)
            )
            for name, store in (("sqlite", lite), ("postgres", await seeded(url)))
        ]
        yield Pair(*clients)
        for client in clients:
            await client.close()  # before the schema is dropped


def cursor(at: Any, order_id: Any) -> str:
    raw = json.dumps([at, order_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


NEAR = st.sampled_from(TIMES).flatmap(
    lambda t: st.sampled_from([t, t - 1e-6, t + 1e-6, t - 0.5, t + 0.5, t + 1, t * 10])
)
SECONDS = NEAR | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**20), 10**20)
ISO = st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat) | st.datetimes().map(
    datetime.isoformat  # without a timezone: refused
)
TIME_TEXT = SECONDS.map(str) | ISO | st.text(max_size=12)
IDS = st.sampled_from([o.order_id for o in ORDERS]) | st.uuids().map(str) | st.text(max_size=8)
CURSORS = st.builds(cursor, NEAR | SECONDS, IDS) | st.text(max_size=16)
STATUS_TEXT = st.lists(
    st.sampled_from([s.value for s in Status]) | st.text(max_size=6), min_size=1, max_size=3
).map(",".join)
TOKEN_TEXT = st.sampled_from(["SOL", "USDC", "JUP", "BONK", "sol", "WOOF", "nope", ""])
QUERIES = st.fixed_dictionaries(
    {},
    optional={
        "from": TIME_TEXT,
        "to": TIME_TEXT,
        "limit": st.integers(-1, 600).map(str) | st.sampled_from(["1", "2", "3"]) | st.text(),
        "status": STATUS_TEXT,
        "tokenIn": TOKEN_TEXT,
        "tokenOut": TOKEN_TEXT,
        "cursor": CURSORS,
    },
)


async def answer(client: Client, query: dict[str, str]) -> tuple[int, Any]:
    resp = await client.get("/api/orders", params=query)
    assert resp.status < 500, (query, await resp.text())
    body = await resp.json()
    if resp.status != 200:
        return resp.status, body["error"]["code"]
    return 200, ([o["orderId"] for o in body["orders"]], body["nextCursor"])


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=QUERIES)
@example(query={"limit": "2"})  # pages through ties in time
@example(query={"to": "1000.000001", "from": "999.999999"})
@example(query={"cursor": cursor(1000.0, ORDERS[2].order_id)})
@example(query={"from": "4.657923890346466e-111"})  # below a microsecond: 0 in both
@example(query={"cursor": cursor(1000.0000001, ORDERS[2].order_id)})
async def test_both_stores_answer_any_history_query_alike(
    pair: Pair, query: dict[str, str]
) -> None:
    pages = 0
    while True:
        lite, pg = await answer(pair.sqlite, query), await answer(pair.postgres, query)
        assert lite == pg, query
        status, found = lite
        if status != 200 or found[1] is None or pages == 4:
            return
        query, pages = {**query, "cursor": found[1]}, pages + 1

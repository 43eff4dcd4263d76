"""Two engine replicas on PostgreSQL + Redis, one shared chain service, nginx in front: the
compose topology as real processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support.processes import Process, chain_service, free_port, nginx, redis_server, replica
from tests.support.services import postgres_schema

pytestmark = pytest.mark.slow  # skipped by a plain `make test`: see tests/conftest.py

ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1.5}


@dataclass
class Cluster:
    chain: Process
    a: Process
    b: Process
    lb: Process
    redis: Process
    redis_port: int
    store_url: str
    http: aiohttp.ClientSession


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        store_url = await stack.enter_async_context(postgres_schema())
        # A Redis of the test's own, so a test can stop it mid-stream.
        redis_port = free_port()
        redis = await stack.enter_async_context(redis_server(redis_port, tmp_path))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        # A transaction a killed replica stored as submitted but never sent is unseen by the
        # chain: the replica that takes the order over waits until its blockhash expires
        # before sending another (10 slots, 4 s, instead of a minute).
        config = tmp_path / "chain.toml"
        config.write_text("[profiles.instant]\nblockhash_validity_slots = 10\n")
        chain = await stack.enter_async_context(chain_service(tmp_path, "--config", str(config)))
        a = await stack.enter_async_context(replica(tmp_path, "a", store_url, chain.url, redis_url))
        b = await stack.enter_async_context(replica(tmp_path, "b", store_url, chain.url, redis_url))
        lb = await stack.enter_async_context(nginx(tmp_path, [a.url, b.url]))
        http = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        )
        yield Cluster(chain, a, b, lb, redis, redis_port, store_url, http)


async def post(c: Cluster, base: str) -> str:
    async with c.http.post(f"{base}/api/order/execute", json=ORDER) as resp:
        body = await resp.json()
        assert resp.status == 201, body
        order_id: str = body["orderId"]
        return order_id


async def stream(c: Cluster, base: str, order_id: str, timeout: float = 15) -> list[dict[str, Any]]:
    """Every event of the order, from a WebSocket, until the server closes it."""
    ws_url = base.replace("http://", "ws://") + f"/api/order/status?orderId={order_id}"
    events = []
    async with asyncio.timeout(timeout), c.http.ws_connect(ws_url) as ws:
        async for msg in ws:
            events.append(msg.json())
        assert ws.close_code == 1000, ws.close_code
    return events


async def ledger(c: Cluster) -> list[dict[str, Any]]:
    async with c.http.get(f"{c.chain.url}/admin/ledger") as resp:
        body = await resp.json()
    entries: list[dict[str, Any]] = body["entries"] if isinstance(body, dict) else body
    return entries


def check(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "confirmed", statuses
    assert statuses.count("submitted") == 1


async def test_a_watcher_on_one_replica_sees_an_order_executed_on_the_other(
    cluster: Cluster,
) -> None:
    order_id = await post(cluster, cluster.a.url)
    check(await stream(cluster, cluster.b.url, order_id))


async def test_300_orders_through_the_load_balancer_run_on_both_replicas(
    cluster: Cluster,
) -> None:
    order_ids = await asyncio.gather(*(post(cluster, cluster.lb.url) for _ in range(300)))
    results = await asyncio.gather(
        *(stream(cluster, cluster.lb.url, o, timeout=60) for o in order_ids)
    )
    for events in results:
        check(events)
    entries = await ledger(cluster)
    assert len(entries) == len({e["signature"] for e in entries}) == 300
    conn = await asyncpg.connect(cluster.store_url.split("?")[0])
    try:
        schema = cluster.store_url.split("schema=")[1]
        owners = {r["owner"] for r in await conn.fetch(f'SELECT owner FROM "{schema}".orders')}
    finally:
        await conn.close()
    assert owners == {"a", "b"}


async def wait_submitted(cluster: Cluster, base: str, order_ids: list[str]) -> list[str]:
    """The signature of each order's transaction, once it is stored as submitted."""
    ws_base = base.replace("http://", "ws://")
    signatures = []
    for order_id in order_ids:
        async with cluster.http.ws_connect(f"{ws_base}/api/order/status?orderId={order_id}") as ws:
            while (event := await ws.receive_json(timeout=10))["status"] != "submitted":
                pass
            signatures.append(event["data"]["txHash"])
    return signatures


async def wait_received(cluster: Cluster, signatures: list[str]) -> None:
    """Until the chain has been sent each transaction (an engine stores a signature as
    submitted before it sends the transaction)."""
    async with asyncio.timeout(10):
        for signature in signatures:
            while True:
                async with cluster.http.get(f"{cluster.chain.url}/tx/{signature}") as resp:
                    if (await resp.json())["status"]["state"] != "unknown":
                        break
                await asyncio.sleep(0.05)  # polling the chain, as an engine would


async def test_no_watcher_misses_an_event_while_redis_restarts(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Orders run on `a`, their watchers sit on `b`: the events travel through Redis, which
    is stopped mid-stream. `b`'s watchers fall back to the store, then Redis returns."""
    await cluster.http.post(f"{cluster.chain.url}/admin/hold")
    order_ids = [await post(cluster, cluster.a.url) for _ in range(5)]
    await wait_submitted(cluster, cluster.a.url, order_ids)
    watchers = [
        asyncio.create_task(stream(cluster, cluster.b.url, o, timeout=30)) for o in order_ids
    ]
    cluster.redis.kill()
    await cluster.redis.wait()
    await cluster.http.post(f"{cluster.chain.url}/admin/release")  # confirmed while Redis is down
    for events in await asyncio.gather(*watchers):
        check(events)
    async with redis_server(cluster.redis_port, tmp_path):
        order_id = await post(cluster, cluster.a.url)
        check(await stream(cluster, cluster.b.url, order_id))


async def test_a_killed_replicas_orders_finish_on_the_other_exactly_once(
    cluster: Cluster,
) -> None:
    await cluster.http.post(f"{cluster.chain.url}/admin/hold")
    order_ids = [await post(cluster, cluster.a.url) for _ in range(6)]
    # Wait (through b, over Redis) until a has sent every transaction, then kill a. Killed
    # between storing and sending, an order would rightly be sent again once its blockhash
    # expired (a second `submitted`): the case the engine tests cover, not this one's.
    await wait_received(cluster, await wait_submitted(cluster, cluster.b.url, order_ids))
    cluster.a.kill()
    await cluster.http.post(f"{cluster.chain.url}/admin/release")
    # Through nginx, which finds a dead and serves everything from b.
    results = await asyncio.gather(*(stream(cluster, cluster.lb.url, o) for o in order_ids))
    for events in results:
        check(events)
    entries = await ledger(cluster)
    assert len(entries) == len({e["signature"] for e in entries}) == 6


async def sol_price(cluster: Cluster, base: str) -> Decimal:
    """USDC per SOL the best venue pays now, as the replica's market view says."""
    async with asyncio.timeout(10):
        while True:
            async with cluster.http.get(f"{base}/api/market") as resp:
                if resp.status == 200:  # 503 until the replica's view caught up
                    body = await resp.json()
                    break
            await asyncio.sleep(0.05)  # polling a replica that is starting
    pair = next(p for p in body["pairs"] if (p["tokenIn"], p["tokenOut"]) == ("SOL", "USDC"))
    return Decimal(str(max(price["price"] for price in pair["prices"])))


async def open_limit_orders(cluster: Cluster, base: str) -> int:
    async with cluster.http.get(f"{base}/api/stats") as resp:
        count: int = (await resp.json())["openOrders"]["limit"]
        return count


async def test_a_killed_replicas_open_limit_order_fires_once_on_the_other(
    cluster: Cluster,
) -> None:
    """Armed on a, which dies: b takes it over within the lease and fires it, the market
    having lifted meanwhile; one swap lands."""
    limit = (await sol_price(cluster, cluster.a.url) * Decimal("1.01")).quantize(Decimal("0.01"))
    body = {**ORDER, "orderType": "limit", "limitPrice": str(limit), "expiresIn": 600}
    async with cluster.http.post(f"{cluster.a.url}/api/order/execute", json=body) as resp:
        assert resp.status == 201, await resp.text()
        order_id = (await resp.json())["orderId"]
    ws_url = cluster.b.url.replace("http://", "ws://") + f"/api/order/status?orderId={order_id}"
    async with cluster.http.ws_connect(ws_url) as ws:
        while (await ws.receive_json(timeout=10))["status"] != "open":
            pass
    assert await open_limit_orders(cluster, cluster.a.url) == 1
    cluster.a.kill()
    # The market lifts at once: b, taking the order over once a's lease lapses, arms it
    # with its price already there and fires it.
    move = {"tokenA": "SOL", "tokenB": "USDC", "bps": 300}
    async with cluster.http.post(f"{cluster.chain.url}/admin/move", json=move) as resp:
        assert resp.status == 200, await resp.text()
    events = await stream(cluster, cluster.b.url, order_id)
    check(events)
    assert [e["status"] for e in events][:3] == ["pending", "open", "routing"]
    assert "trigger" in events[2]["data"]
    confirmed = events[-1]["data"]
    assert Decimal(confirmed["amountOut"]) >= Decimal(str(ORDER["amount"])) * limit
    landed = [e for e in await ledger(cluster) if e["signature"] == confirmed["txHash"]]
    assert len(landed) == len(await ledger(cluster)) == 1

"""SQLite mode is one process: a second engine on the same file is refused before it touches
an order, whether it was given another port or, the likely accident, the same one. Either
way the first engine's orders in flight stay its own and land exactly once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.clients import post_order_to, until_submitted
from tests.support.processes import (
    ENGINE_READY,
    READY_TIMEOUT_S,
    Finished,
    Process,
    chain_service,
    engine,
    free_port,
    spawn,
)

ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1.5}
IN_FLIGHT = 3


@dataclass
class InFlight:
    """An engine on `tmp_path/orders.db` whose orders are sent and held by the chain."""

    chain: Process
    first: Process
    order_ids: list[str]
    http: aiohttp.ClientSession


@pytest.fixture
async def in_flight(tmp_path: Path) -> AsyncIterator[InFlight]:
    async with AsyncExitStack() as stack:
        # The chain of this test alone: its ledger holds this test's swaps and no others.
        chain = await stack.enter_async_context(chain_service(tmp_path))
        first = await stack.enter_async_context(
            engine(tmp_path, "first", env={"ORDER_ENGINE_VENUES_CHAIN_URL": chain.url})
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.post(f"{chain.url}/admin/hold") as resp:
            assert resp.status == 200
        order_ids = [await post_order_to(http, first.url) for _ in range(IN_FLIGHT)]
        for order_id in order_ids:
            await until_submitted(http, first.url, order_id)
        yield InFlight(chain, first, order_ids, http)


async def events(http: aiohttp.ClientSession, base: str, order_id: str) -> list[dict[str, Any]]:
    """Every event of the order until the engine closes the stream (it has finished)."""
    seen = []
    async with asyncio.timeout(20):
        async with http.ws_connect(f"{base}/api/order/status?orderId={order_id}") as ws:
            async for msg in ws:
                seen.append(msg.json())
            assert ws.close_code == 1000, ws.close_code
    return seen


async def second_engine(tmp_path: Path, port: int, chain_url: str) -> Finished:
    """`python -m order_engine` on the same database, spelled differently (relative to its
    working directory): how it ended. Fails the test if it reports ready instead."""
    env = {
        "PORT": str(port),
        "ORDER_ENGINE_STORE_URL": "sqlite:///orders.db",
        "ORDER_ENGINE_VENUES_CHAIN_URL": chain_url,
        "ORDER_ENGINE_ENGINE_REPLICA_ID": "second",
    }
    async with spawn([sys.executable, "-m", "order_engine"], cwd=tmp_path, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        stdout = proc.stdout

        async def read_stdout() -> str:
            lines = []
            while line := await stdout.readline():
                lines.append(line.decode(errors="replace"))
                if ENGINE_READY in lines[-1]:
                    pytest.fail("a second engine on the same file started:\n" + "".join(lines))
            return "".join(lines)

        async with asyncio.timeout(READY_TIMEOUT_S):
            out, err = await asyncio.gather(read_stdout(), proc.stderr.read())
            code = await proc.wait()
    return Finished(code, out, err.decode(errors="replace"))


async def assert_each_lands_once(run: InFlight) -> None:
    async with run.http.post(f"{run.chain.url}/admin/release") as resp:
        assert resp.status == 200
    for order_id in run.order_ids:
        seen = await events(run.http, run.first.url, order_id)
        assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
        statuses = [e["status"] for e in seen]
        assert statuses[-1] == "confirmed", statuses
        assert statuses.count("submitted") == 1, statuses
    async with run.http.get(f"{run.chain.url}/admin/ledger") as resp:
        ledger = (await resp.json())["entries"]
    assert len(ledger) == len({e["signature"] for e in ledger}) == IN_FLIGHT


async def test_a_second_engine_on_another_port_is_refused_at_once(
    in_flight: InFlight, tmp_path: Path
) -> None:
    done = await second_engine(tmp_path, free_port(), in_flight.chain.url)
    assert done.returncode == 1
    database = (tmp_path / "orders.db").resolve()
    assert done.stderr.strip().splitlines() == [
        f"order-engine: {database}: another engine is using it"
        f" (pid {in_flight.first.pid}); one engine per SQLite file, PostgreSQL for several"
    ]
    await assert_each_lands_once(in_flight)


async def test_a_second_engine_on_the_same_port_leaves_the_orders_alone(
    in_flight: InFlight, tmp_path: Path
) -> None:
    port = int(in_flight.first.url.rsplit(":", 1)[1])
    done = await second_engine(tmp_path, port, in_flight.chain.url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"order-engine: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    await assert_each_lands_once(in_flight)

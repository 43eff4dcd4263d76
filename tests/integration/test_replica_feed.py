"""Engine replicas follow the chain service's account stream: real processes, real sockets.

A replica tells the outside what its view of the market is doing only through its metrics
(`order_engine_market_data_staleness_slots`: +Inf while the stream is down;
`order_engine_market_data_resyncs`: fresh snapshots taken after the first) and the quotes
its orders report (`"source": "stream"` or `"rpc"`)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from order_engine.venues.tokens import REGISTRY
from tests.support.processes import Process, chain_service, engine_process, free_port
from tests.support.proxy import TcpProxy

WAIT = 30.0  # seconds: a bound on waiting for what must come, never a pause
STALENESS = "order_engine_market_data_staleness_slots"
RESYNCS = "order_engine_market_data_resyncs"
ORDER = {"tokenIn": "SOL", "tokenOut": "USDC", "amount": 1.5}
ORDER_LAMPORTS = 1_500_000_000
USDC = REGISTRY.resolve("USDC")


def replica(tmp_path: Path, chain_url: str) -> Any:
    """An engine on its own SQLite file whose market is the chain service at `chain_url`."""
    return engine_process(
        tmp_path,
        free_port(),
        ORDER_ENGINE_VENUES_CHAIN_URL=chain_url,
        ORDER_ENGINE_VENUES_PROFILE="instant",
    )


async def metrics(http: aiohttp.ClientSession, engine: Process) -> dict[str, float]:
    async with http.get(f"{engine.url}/metrics") as resp:
        text = await resp.text()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (STALENESS, RESYNCS):
            values[name] = float(value)
    return values


async def metric_until(
    http: aiohttp.ClientSession, engine: Process, name: str, holds: Callable[[float], bool]
) -> float:
    """A process has no event to wait on from outside: ask its metrics again at short
    intervals until `holds`, failing at the deadline."""
    async with asyncio.timeout(WAIT):
        while True:
            value = (await metrics(http, engine))[name]
            if holds(value):
                return value
            await asyncio.sleep(0.05)


async def following(http: aiohttp.ClientSession, engine: Process) -> None:
    await metric_until(http, engine, STALENESS, math.isfinite)


async def chain_quotes(http: aiohttp.ClientSession, chain_url: str) -> dict[str, str]:
    """What each venue on the chain itself pays for the order now, as the engine reports it."""
    quotes = {}
    for dex in ("Raydium", "Meteora"):
        body = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": str(ORDER_LAMPORTS)}
        async with http.post(f"{chain_url}/venues/{dex}/quote", json=body) as resp:
            assert resp.status == 200, await resp.text()
            quote = (await resp.json())["quote"]
        quotes[dex] = USDC.format(int(quote["amountOut"]))
    return quotes


async def trade_on_the_chain(http: aiohttp.ClientSession, chain_url: str, dex: str) -> None:
    """Someone else's swap lands: the pools move, whoever is watching."""
    body = {"tokenIn": "SOL", "tokenOut": "USDC", "amountIn": str(40 * ORDER_LAMPORTS)}
    async with http.post(f"{chain_url}/venues/{dex}/quote", json=body) as resp:
        quote = (await resp.json())["quote"]
    async with http.post(f"{chain_url}/tx/build", json={"legs": [quote], "minOut": "0"}) as resp:
        tx = (await resp.json())["tx"]
    async with http.post(f"{chain_url}/tx/submit", json={"tx": tx}) as resp:
        signature = (await resp.json())["signature"]
    async with http.get(f"{chain_url}/tx/{signature}/wait", params={"timeout": "10"}) as resp:
        assert (await resp.json())["status"]["state"] == "landed"


async def place_order(http: aiohttp.ClientSession, engine: Process) -> list[dict[str, Any]]:
    """Every event of a new order, until it ends."""
    async with http.post(f"{engine.url}/api/order/execute", json=ORDER) as resp:
        body = await resp.json()
        assert resp.status == 201, body
    ws_url = engine.url.replace("http://", "ws://") + f"/api/order/status?orderId={body['orderId']}"
    events = []
    async with asyncio.timeout(WAIT), http.ws_connect(ws_url) as ws:
        async for msg in ws:
            events.append(msg.json())
    assert events[-1]["status"] == "confirmed", events[-1]
    return events


def quoted(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The quotes of every routing attempt that got as far as building."""
    return [q for e in events if e["status"] == "building" for q in e["data"]["quotes"]]


def assert_streamed(events: list[dict[str, Any]], expected: dict[str, str]) -> None:
    quotes = quoted(events)
    assert quotes
    assert {q["source"] for q in quotes} == {"stream"}
    # Quoted locally, and exactly what the chain's own pools pay: no message missed.
    assert {q["dex"]: q["amountOut"] for q in quotes} == expected


@asynccontextmanager
async def proxied(chain: Process) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", int(chain.url.rsplit(":", 1)[1]))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_a_replica_quotes_from_the_chain_services_stream(tmp_path: Path) -> None:
    async with (
        chain_service(tmp_path) as chain,
        replica(tmp_path, chain.url) as engine,
        aiohttp.ClientSession() as http,
    ):
        await following(http, engine)
        assert_streamed(await place_order(http, engine), await chain_quotes(http, chain.url))
        # The order's own swap moved the pools; the next order is quoted after it.
        assert_streamed(await place_order(http, engine), await chain_quotes(http, chain.url))
        assert (await metrics(http, engine))[RESYNCS] == 0


async def test_a_replica_cut_off_from_the_stream_resumes_it_without_a_gap(
    tmp_path: Path,
) -> None:
    """The replica reaches the chain service through a proxy that is cut. While it is
    blind, a swap lands on the chain (sent there directly); once the proxy is restored the
    replica resumes the stream after the last message it applied, and quotes that swap's
    pools exactly, without a fresh snapshot."""
    async with (
        chain_service(tmp_path) as chain,
        proxied(chain) as proxy,
        replica(tmp_path, f"http://127.0.0.1:{proxy.port}") as engine,
        aiohttp.ClientSession() as http,
    ):
        await following(http, engine)
        assert_streamed(await place_order(http, engine), await chain_quotes(http, chain.url))

        proxy.cut()
        await metric_until(http, engine, STALENESS, math.isinf)
        for dex in ("Raydium", "Meteora"):
            await trade_on_the_chain(http, chain.url, dex)

        proxy.restore()
        await following(http, engine)
        assert (await metrics(http, engine))[RESYNCS] == 0
        assert_streamed(await place_order(http, engine), await chain_quotes(http, chain.url))


async def test_a_replica_resyncs_from_a_restarted_chain_service(tmp_path: Path) -> None:
    """The chain service is killed (-9) and started again on the same port: a new chain,
    so a new stream. The replica sees the old one die and follows the new one from a fresh
    snapshot."""
    port = free_port()
    chain_url = f"http://127.0.0.1:{port}"
    async with AsyncExitStack() as replicas, aiohttp.ClientSession() as http:
        async with chain_service(tmp_path, "--port", str(port)) as first:
            engine = await replicas.enter_async_context(replica(tmp_path, chain_url))
            await following(http, engine)
            assert_streamed(await place_order(http, engine), await chain_quotes(http, chain_url))
            first.kill()
            await first.wait()
            await metric_until(http, engine, STALENESS, math.isinf)

        async with chain_service(tmp_path, "--port", str(port)):
            await metric_until(http, engine, RESYNCS, lambda resyncs: resyncs == 1)
            await following(http, engine)
            assert_streamed(await place_order(http, engine), await chain_quotes(http, chain_url))
            assert (await metrics(http, engine))[RESYNCS] == 1

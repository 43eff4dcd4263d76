"""The chain service's account stream over its WebSocket: a real server, real sockets, the
follower the replicas run (`follow` over `RemoteFeedSource`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, NoReturn

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from order_engine.chain import build_chain_app
from order_engine.chain.feed import FEEDS
from order_engine.market import MarketData, StreamedVenue, follow
from order_engine.market.follow import FeedBroken, FeedSubscriptionLike
from order_engine.venues import SimulatedMarket
from order_engine.venues.feed import AccountUpdate, SlotNotice, Snapshot
from order_engine.venues.feed_wire import CLOSE_LAGGED
from order_engine.venues.market_data import PoolSpec
from order_engine.venues.remote_clients import RemoteVenue
from order_engine.venues.remote_feed import RemoteFeedSource
from order_engine.venues.tokens import REGISTRY
from tests.support.market import land_swap
from tests.support.proxy import TcpProxy

WAIT = 10.0  # seconds: a bound on waiting for what must come, never a pause
SOL, USDC = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")
PAIRS = [("SOL", "USDC"), ("USDC", "SOL"), ("BONK", "SOL"), ("JUP", "USDC"), ("USDT", "USDC")]


@pytest.fixture
async def server(aiohttp_server: Any, market: SimulatedMarket) -> TestServer:
    result: TestServer = await aiohttp_server(build_chain_app(market))
    return result


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


async def swap(market: SimulatedMarket, rng: random.Random) -> None:
    token_in, token_out = (REGISTRY.resolve(s) for s in rng.choice(PAIRS))
    amount = token_in.to_base(Decimal(rng.choice(["0.01", "3", "250", "90000"])))
    await land_swap(market, rng.choice(["Raydium", "Meteora"]), token_in, token_out, amount, WAIT)


async def trade(market: SimulatedMarket, rng: random.Random, count: int) -> None:
    for _ in range(count):
        await swap(market, rng)
    market.step(3)  # background trades, and the market's clock moves


def assert_same_pools(data: MarketData, market: SimulatedMarket) -> None:
    pools = {p: pool for venue in market.venues.values() for p, pool in venue.pools.items()}
    assert set(data.pools) == set(pools)
    for pool_id, (_, mirror) in data.pools.items():
        assert mirror.state() == pools[pool_id].state(), pool_id
    assert data.market_time == market.now()


class Watched:
    """A feed source that tells the test when the follower subscribes, and with what."""

    def __init__(self, source: RemoteFeedSource) -> None:
        self._source = source
        self.attempted = asyncio.Event()
        self.subscriptions: list[tuple[int | None, str | None]] = []

    @asynccontextmanager
    async def subscribe(
        self, after_seq: int | None, stream_id: str | None
    ) -> AsyncIterator[FeedSubscriptionLike]:
        self.attempted.set()
        async with self._source.subscribe(after_seq, stream_id) as sub:
            self.subscriptions.append((after_seq, stream_id))
            yield sub


@asynccontextmanager
async def following(data: MarketData, source: Any) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(follow(data, source, retry_s=0.01, max_retry_s=0.05))
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def read_to_the_end(sub: FeedSubscriptionLike) -> NoReturn:
    while True:
        await sub.next()


class Dropped(logging.Handler):
    """Set when the service says it dropped a subscriber for not reading."""

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "does not read" in record.getMessage():
            self.event.set()


# -- following -------------------------------------------------------------------------------


async def test_a_follower_over_the_websocket_keeps_an_exact_copy_of_every_pool(
    server: TestServer, market: SimulatedMarket, session: aiohttp.ClientSession
) -> None:
    rng = random.Random(5)
    data = MarketData(max_staleness_slots=4)
    async with following(data, RemoteFeedSource(session, url(server))):
        await trade(market, rng, 10)
        async with asyncio.timeout(WAIT):
            await data.reached(market.feed.last_seq)
        assert data.stream_id == market.feed.stream_id
        assert_same_pools(data, market)

        await trade(market, rng, 10)
        market.add_pool(PoolSpec("Meteora", "BONK", "JUP", 400_000, 25, 10_000, 60))  # a launch
        async with asyncio.timeout(WAIT):
            await data.reached(market.feed.last_seq)
        assert_same_pools(data, market)
        assert data.resyncs == 0


async def test_a_cut_stream_falls_back_to_rpc_and_resumes_after_its_last_seq(
    server: TestServer, market: SimulatedMarket, session: aiohttp.ClientSession
) -> None:
    """The stream goes through a proxy that is cut; quotes by RPC go to the service
    directly, so the fallback can be seen working while the stream is down."""
    proxy = TcpProxy("127.0.0.1", server.port or 0)
    await proxy.start()
    rng = random.Random(6)
    data = MarketData(max_staleness_slots=4)
    source = Watched(RemoteFeedSource(session, f"http://127.0.0.1:{proxy.port}"))
    venue = StreamedVenue(RemoteVenue("Raydium", session, url(server)), data)
    try:
        async with following(data, source):
            async with asyncio.timeout(WAIT):
                await data.reached(market.feed.last_seq)
            assert (await venue.quote(SOL, USDC, 10**9)).source == "stream"

            source.attempted.clear()
            proxy.cut()
            async with asyncio.timeout(WAIT):
                await source.attempted.wait()  # it saw the break and tries to come back
            assert not data.connected
            cut_at = data.seq
            assert (await venue.quote(SOL, USDC, 10**9)).source == "rpc"
            await trade(market, rng, 8)  # the market moves on while the follower is blind
            assert market.feed.last_seq > cut_at

            proxy.restore()
            async with asyncio.timeout(WAIT):
                await data.reached(market.feed.last_seq)
            # It resumed the same stream after the last message it applied: no snapshot.
            assert source.subscriptions[-1] == (cut_at, market.feed.stream_id)
            assert data.resyncs == 0
            assert_same_pools(data, market)
            streamed = await venue.quote(SOL, USDC, 10**9)
            assert streamed.source == "stream"
            own = market.venues["Raydium"].best_quote(SOL, USDC, 10**9)
            assert msgspec.structs.replace(streamed, source="rpc", slot=None) == own
    finally:
        await proxy.stop()


async def test_each_message_is_encoded_once_for_every_subscriber(
    server: TestServer, market: SimulatedMarket, session: aiohttp.ClientSession
) -> None:
    await market.stop()  # no slot notices of its own: the test publishes every message
    frames = server.app[FEEDS].frames
    source = RemoteFeedSource(session, url(server))
    rng = random.Random(7)
    async with source.subscribe(None, None) as a, source.subscribe(None, None) as b:
        first_a, first_b = await a.next(), await b.next()
        assert isinstance(first_a, Snapshot)
        assert isinstance(first_b, Snapshot)
        assert first_a.seq == first_b.seq
        await trade(market, rng, 6)
        market.feed.notice()
        for sub in (a, b):
            seen = []
            while not seen or seen[-1].seq < market.feed.last_seq:
                seen.append(await sub.next())
            assert [m.seq for m in seen] == list(range(first_a.seq + 1, market.feed.last_seq + 1))
            assert {type(m) for m in seen} == {AccountUpdate, SlotNotice}
    assert frames.encoded == 2 + (market.feed.last_seq - first_a.seq)


# -- subscribers that cannot keep up, and the end of the stream ------------------------------


async def test_a_subscriber_that_falls_behind_is_closed_and_told_where_it_was(
    server: TestServer, market: SimulatedMarket, session: aiohttp.ClientSession
) -> None:
    await market.stop()  # no slot notice of its own between the snapshot and the flood
    async with RemoteFeedSource(session, url(server)).subscribe(None, None) as sub:
        snapshot = await sub.next()
        assert isinstance(snapshot, Snapshot)
        for _ in range(10_001):  # more than any inbox holds, before the sender runs again
            market.feed.notice()
        with pytest.raises(FeedBroken) as broken:
            await read_to_the_end(sub)
    assert f"code {CLOSE_LAGGED}" in str(broken.value)
    assert f"lagged after seq {snapshot.seq}" in str(broken.value)


async def test_a_follower_that_fell_behind_resubscribes_and_catches_up(
    server: TestServer, market: SimulatedMarket, session: aiohttp.ClientSession
) -> None:
    data = MarketData(max_staleness_slots=4)
    source = Watched(RemoteFeedSource(session, url(server)))
    async with following(data, source):
        async with asyncio.timeout(WAIT):
            await data.reached(market.feed.last_seq)
        for _ in range(10_001):
            market.feed.notice()
        await trade(market, random.Random(8), 4)
        async with asyncio.timeout(WAIT):
            await data.reached(market.feed.last_seq)
    assert len(source.subscriptions) == 2
    assert data.resyncs == 1  # the chain no longer held what followed: a fresh snapshot
    assert_same_pools(data, market)


async def test_a_subscriber_that_stops_reading_is_dropped(
    server: TestServer,
    market: SimulatedMarket,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("order_engine.chain.feed.FEED_SEND_TIMEOUT_S", 0.2)
    caplog.set_level(logging.INFO, logger="order_engine.chain")
    dropped = Dropped()
    logging.getLogger("order_engine.chain").addHandler(dropped)
    feeds = server.app[FEEDS]
    # A client whose kernel takes little and who never reads: the server's buffers fill.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port or 0))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(
            b"GET /feed HTTP/1.1\r\nHost: chain\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 101")
        async with asyncio.timeout(WAIT):
            while not dropped.event.is_set():
                # Fewer than an inbox holds per send timeout: it is dropped for not
                # reading, not for lagging.
                for _ in range(200):
                    market.feed.notice()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.01):
                        await dropped.event.wait()
        assert not feeds.open
    finally:
        logging.getLogger("order_engine.chain").removeHandler(dropped)
        writer.transport.abort()


async def test_the_service_closes_its_streams_when_it_shuts_down(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with RemoteFeedSource(session, url(server)).subscribe(None, None) as sub:
        assert isinstance(await sub.next(), Snapshot)
        closing = asyncio.create_task(server.close())
        with pytest.raises(FeedBroken, match="code 1001"):
            await read_to_the_end(sub)
        async with asyncio.timeout(WAIT):
            await closing


async def test_a_silent_stream_is_a_broken_one(session: aiohttp.ClientSession) -> None:
    """A service that accepts the stream and then says nothing: the connection is as good
    as dead, whatever TCP says."""

    async def mute(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/feed", mute)
    async with TestServer(app) as mute_server:
        source = RemoteFeedSource(session, url(mute_server), silence_s=0.3)
        async with source.subscribe(None, None) as sub:
            with pytest.raises(FeedBroken, match=re.escape("silent for 0.3 s")):
                await sub.next()


async def test_a_message_that_is_not_ours_to_read_breaks_the_stream(
    session: aiohttp.ClientSession,
) -> None:
    async def garbled(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type": "slot", "seq": 1}')
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/feed", garbled)
    async with (
        TestServer(app) as garbling,
        RemoteFeedSource(session, url(garbling)).subscribe(None, None) as sub,
    ):
        with pytest.raises(FeedBroken, match=r"unreadable message: message\.streamId"):
            await sub.next()


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [("after=x", "after"), ("after=-1", "after"), ("stream=a%20b", "stream")],
)
async def test_a_bad_subscription_is_refused_naming_the_parameter(
    server: TestServer, session: aiohttp.ClientSession, query: str, field: str
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(f"{url(server)}/feed?{query}")
    assert refused.value.status == 400
    async with session.get(f"{url(server)}/feed?{query}") as resp:
        body = await resp.json()
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["message"].startswith(f"{field}:")


async def test_the_stream_is_only_served_as_a_websocket(
    server: TestServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{url(server)}/feed") as resp:
        assert resp.status == 400
        assert "WebSocket" in (await resp.json())["error"]["message"]


async def test_an_unreachable_service_breaks_the_subscription(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(FeedBroken, match="cannot subscribe"):
            async with RemoteFeedSource(session, f"http://127.0.0.1:{port}").subscribe(None, None):
                pass

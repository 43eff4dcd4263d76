"""Market data: the pools as streamed from the chain, quotes computed from them, and the
fallback to the venues' own quote calls while the stream is down or behind."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient
from aiohttp.web import Application
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from order_engine.app import SERVICES, build_app
from order_engine.market import LocalFeedSource, MarketData, StreamedVenue, follow
from order_engine.market.follow import FeedBroken, FeedSubscriptionLike
from order_engine.venues import SimulatedMarket
from order_engine.venues.base import PermanentVenueError
from order_engine.venues.feed import AccountFeed, AccountUpdate, FeedMessage
from order_engine.venues.profiles import PROFILES
from order_engine.venues.tokens import REGISTRY, Token
from order_engine.venues.venue import SimulatedVenue
from tests.support.clients import post_order, services, watch
from tests.support.factories import make_settings

PAIRS = [("SOL", "USDC"), ("USDC", "SOL"), ("USDT", "USDC"), ("BONK", "SOL"), ("JUP", "RAY")]
VENUES = ("Raydium", "Meteora")


async def catch_up(data: MarketData, feed: AccountFeed, sub: FeedSubscriptionLike) -> None:
    """Apply every message the feed has published so far."""
    while data.seq < feed.last_seq or data.stream_id is None:
        data.apply(await sub.next())


def outcome(venue: SimulatedVenue, token_in: Token, token_out: Token, amount: int) -> Any:
    """The quote, or the code of the venue's refusal."""
    try:
        return venue.best_quote(token_in, token_out, amount)
    except PermanentVenueError as exc:
        return exc.code


def amounts(token: str) -> list[int]:
    t = REGISTRY.resolve(token)
    return [t.to_base(Decimal(a)) for a in ("0.00001", "0.5", "3", "250", "40000", "9000000")]


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("swap"),
            st.sampled_from(VENUES),
            st.sampled_from(PAIRS),
            st.floats(0.001, 0.4),  # of the input pool side, roughly
        ),
        st.tuples(st.just("step"), st.integers(1, 40)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), ops=operations)
def test_a_streamed_quote_equals_the_venues_own_at_the_same_slot(
    seed: int, ops: list[tuple[Any, ...]]
) -> None:
    asyncio.run(_compare_after(seed, ops))


async def _compare_after(seed: int, ops: list[tuple[Any, ...]]) -> None:
    market = SimulatedMarket(PROFILES["realistic"], seed=seed)
    data = MarketData(max_staleness_slots=4)
    with market.feed.subscribe() as sub:
        rng = random.Random(seed)
        for op in ops:
            if op[0] == "step":
                market.step(op[1])  # background trades, and the market clock moves
                continue
            _, venue_name, (a, b), share = op
            venue = market.venues[venue_name]
            token_in, token_out = REGISTRY.resolve(a), REGISTRY.resolve(b)
            size = amounts(a)[rng.randrange(1, 5)]
            try:
                quote = venue.best_quote(token_in, token_out, int(size * share * 10))
            except PermanentVenueError:
                continue
            venue.execute(quote.hops, quote.amount_in, commit=True)  # a swap lands
            assert market.chain.on_landed is not None
            market.chain.on_landed(market.chain.current_slot())  # as the chain tells it
        await catch_up(data, market.feed, sub)
        for name in VENUES:
            own, mirror = market.venues[name], data.venue(name)
            assert mirror is not None
            for a, b in PAIRS:
                token_in, token_out = REGISTRY.resolve(a), REGISTRY.resolve(b)
                for amount in amounts(a):
                    assert outcome(mirror, token_in, token_out, amount) == outcome(
                        own, token_in, token_out, amount
                    )


class Link:
    """The in-process feed behind a link that can be cut, as a network connection can."""

    def __init__(self, feed: AccountFeed) -> None:
        self._feed = LocalFeedSource(feed)
        self.up = True
        self.broken = asyncio.Event()
        self.refused = asyncio.Event()  # a subscription was tried while the link was down
        self.subscriptions: list[tuple[int | None, str | None]] = []

    def cut(self) -> None:
        self.up = False
        self.broken.set()

    def restore(self) -> None:
        self.up = True
        self.broken = asyncio.Event()

    @asynccontextmanager
    async def subscribe(
        self, after_seq: int | None, stream_id: str | None
    ) -> AsyncIterator[FeedSubscriptionLike]:
        if not self.up:
            self.refused.set()
            raise FeedBroken("link down")
        async with self._feed.subscribe(after_seq, stream_id) as sub:
            self.subscriptions.append((after_seq, stream_id))
            yield _Linked(sub, self)


@dataclasses.dataclass
class _Linked:
    sub: FeedSubscriptionLike
    link: Link

    async def next(self) -> FeedMessage:
        reading = asyncio.ensure_future(self.sub.next())
        broken = asyncio.ensure_future(self.link.broken.wait())
        done, _ = await asyncio.wait({reading, broken}, return_when=asyncio.FIRST_COMPLETED)
        if reading not in done:
            reading.cancel()
            raise FeedBroken("link cut")
        broken.cancel()
        return reading.result()


async def test_a_cut_stream_falls_back_to_the_venues_and_resumes_without_a_gap(
    market: SimulatedMarket,
) -> None:
    data = MarketData(max_staleness_slots=4)
    link = Link(market.feed)
    sol, usdc = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")
    venue = StreamedVenue(market.venues["Raydium"], data)
    following = asyncio.create_task(follow(data, link, retry_s=0.01, max_retry_s=0.05))
    try:
        async with asyncio.timeout(5):
            await data.reached(market.feed.last_seq)
        assert (await venue.quote(sol, usdc, 10**9)).source == "stream"

        link.cut()
        async with asyncio.timeout(5):
            await link.refused.wait()  # the follower saw the break and tries to come back
        assert not data.connected
        cut_at = data.seq
        fallback = await venue.quote(sol, usdc, 10**9)
        assert fallback.source == "rpc"
        market.step(5)  # the market moves on while the view is blind

        link.restore()
        async with asyncio.timeout(5):
            await data.reached(market.feed.last_seq)
        # It resumed after the last message it had applied: no snapshot, no gap.
        assert link.subscriptions[-1] == (cut_at, market.feed.stream_id)
        assert data.resyncs == 0
        for pool_id, (venue_name, mirror) in data.pools.items():
            assert mirror.state() == market.venues[venue_name].pools[pool_id].state()
        resumed = await venue.quote(sol, usdc, 10**9)
        assert resumed.source == "stream"
        assert msgspec.structs.replace(resumed, source="rpc", slot=None) == (
            market.venues["Raydium"].best_quote(sol, usdc, 10**9)
        )
    finally:
        following.cancel()


async def test_while_the_stream_is_down_orders_are_routed_by_venue_calls_and_say_so(
    aiohttp_client: Any, tmp_path: Path, market: SimulatedMarket
) -> None:
    """The whole server, its engine following the in-process chain through a link that is
    cut: orders routed meanwhile say so in their routing event, their quotes and the
    metrics, and quote from the stream again once it is back."""
    app = build_app(make_settings(tmp_path), market=market)
    link = Link(market.feed)
    app[SERVICES].feed = link  # followed through the link from start-up on
    client: TestClient[Any, Application] = await aiohttp_client(app)
    data = services(client).market_data
    assert data is not None

    async def routed() -> tuple[str, set[str]]:
        events = await watch(client, await post_order(client))
        assert events[-1]["status"] == "confirmed"
        routing, building = events[1], events[2]
        return routing["data"]["quoteSource"], {q["source"] for q in building["data"]["quotes"]}

    async def metrics() -> dict[str, str]:
        text = await (await client.get("/metrics")).text()
        return dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")

    async with asyncio.timeout(5):
        await data.reached(market.feed.last_seq)
    assert await routed() == ("stream", {"stream"})

    link.cut()
    async with asyncio.timeout(5):
        await link.refused.wait()  # the follower saw the break and finds the link down
    assert await routed() == ("rpc", {"rpc"})
    after_cut = await metrics()
    assert after_cut["order_engine_market_data_staleness_slots"] == "+Inf"
    for venue in VENUES:
        assert float(after_cut[f'order_engine_quotes_total{{source="rpc",venue="{venue}"}}']) >= 1

    link.restore()
    async with asyncio.timeout(5):
        await data.reached(market.feed.last_seq)
    assert await routed() == ("stream", {"stream"})
    assert data.resyncs == 0  # resumed after its last message, not from a fresh snapshot


async def test_a_silent_stream_is_stale_and_not_quoted_from(market: SimulatedMarket) -> None:
    now = [100.0]
    data = MarketData(max_staleness_slots=4, clock=lambda: now[0])
    with market.feed.subscribe() as sub:
        data.apply(await sub.next())
    venue = StreamedVenue(market.venues["Meteora"], data)
    assert venue.source() == "stream"
    now[0] += 4 * 0.4  # four slots of silence: still within bounds
    assert data.fresh()
    now[0] += 0.41
    assert not data.fresh()
    assert venue.source() == "rpc"
    quote = await venue.quote(REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC"), 10**9)
    assert quote.source == "rpc"


async def test_routing_quotes_from_the_stream_and_says_so(
    client: TestClient[Any, Application],
) -> None:
    data = services(client).market_data
    assert data is not None
    async with asyncio.timeout(5):
        await data.reached(1)
    events = await watch(client, await post_order(client))
    routing, building = events[1], events[2]
    assert routing["data"]["quoteSource"] == "stream"
    assert {q["source"] for q in building["data"]["quotes"]} == {"stream"}
    assert all(isinstance(q["slot"], int) for q in building["data"]["quotes"])
    metrics = (await (await client.get("/metrics")).text()).splitlines()
    streamed = [
        line
        for line in metrics
        if line.startswith("order_engine_quotes_total{") and 'source="stream"' in line
    ]
    assert len(streamed) == 2  # one series per venue


async def test_a_venue_whose_quote_call_is_down_is_still_quoted_from_the_stream(
    client: TestClient[Any, Application],
) -> None:
    data = services(client).market_data
    assert data is not None
    async with asyncio.timeout(5):
        await data.reached(1)
    services(client).market.venues["Raydium"].faults.down = True
    events = await watch(client, await post_order(client))
    assert events[-1]["status"] == "confirmed"
    assert {q["dex"] for q in events[2]["data"]["quotes"]} == set(VENUES)
    assert "skipped" not in events[2]["data"]


class _Poisoned:
    """The in-process feed, but the first update it passes on is replaced by one that
    cannot be applied (as a bug or a corrupt message would make it)."""

    def __init__(self, feed: AccountFeed) -> None:
        self._feed = LocalFeedSource(feed)
        self.subscriptions: list[tuple[int | None, str | None]] = []
        self.poisoned = False

    @asynccontextmanager
    async def subscribe(
        self, after_seq: int | None, stream_id: str | None
    ) -> AsyncIterator[FeedSubscriptionLike]:
        self.subscriptions.append((after_seq, stream_id))
        async with self._feed.subscribe(after_seq, stream_id) as sub:
            yield self._wrap(sub)

    def _wrap(self, sub: FeedSubscriptionLike) -> FeedSubscriptionLike:
        source = self

        class Wrapped:
            async def next(self) -> FeedMessage:
                message = await sub.next()
                if isinstance(message, AccountUpdate) and not source.poisoned:
                    source.poisoned = True
                    return dataclasses.replace(message, pool_id="nowhere", state={})
                return message

        return Wrapped()


async def test_a_message_that_cannot_be_applied_makes_the_view_start_over(
    market: SimulatedMarket,
) -> None:
    data = MarketData(max_staleness_slots=4)
    source = _Poisoned(market.feed)
    following = asyncio.create_task(follow(data, source, retry_s=0.01, max_retry_s=0.05))
    try:
        async with asyncio.timeout(5):
            await data.reached(market.feed.last_seq)
            market.step()  # moves pools: the first update is the poisoned one
            while len(source.subscriptions) < 2:
                await data.reached(market.feed.last_seq)
                market.step()
            await data.reached(market.feed.last_seq)
        # Started over from a snapshot (no resume), and the view is right again.
        assert source.subscriptions[1] == (None, None)
        assert data.resyncs == 1 and data.fresh()
        for pool_id, (venue_name, mirror) in data.pools.items():
            assert mirror.state() == market.venues[venue_name].pools[pool_id].state()
    finally:
        following.cancel()

"""Live venue prices from the streamed pools: `GET /api/market` and its WebSocket.

What a chart of the market needs is not every pool update (the chain may send hundreds a
second) but each venue's price, now. So one shared `PriceBoard` reprices every pair after the
pools move, at most a few times a second, and remembers when each pair last changed; a
watcher keeps only the board version it has sent up to and gets, at most once per interval,
the pairs that changed since. A slow watcher therefore costs no memory (it skips to the
latest prices instead of queueing old ones); one that stops reading is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, web

from order_engine.api.errors import ApiError, json_response
from order_engine.api.sockets import (
    CLOSE_TRY_AGAIN,
    Connections,
    SlowConsumer,
    abort_connection,
    close_socket,
)
from order_engine.api.ws import OrderStreams
from order_engine.market import MarketData
from order_engine.venues.base import AMOUNT_TOO_SMALL, PermanentVenueError
from order_engine.venues.feed import AccountUpdate
from order_engine.venues.tokens import REGISTRY, Token, TokenRegistry, UnknownToken
from order_engine.venues.venue import SimulatedVenue

log = logging.getLogger("order_engine.api.market")

MIN_INTERVAL_S = 0.25  # at most 4 messages a second per watcher
# A watcher hears nothing while no pool moves: this often it checks the view is still fresh.
FRESH_CHECK_S = 1.0
# The reference trade's output is at least this many base units, so rounding moves the
# price by at most 0.1 bps.
PRECISION_UNITS = 100_000
# The token a pair is priced in: the earlier one in this list (USDC per SOL, SOL per JUP...).
# The dashboard's QUOTE_RANK (static/app.js) is the same list.
QUOTE_RANK = ("USDC", "USDT", "SOL", "WSOL", "JUP", "RAY", "BONK")


@dataclass(frozen=True, slots=True)
class ChartPair:
    """One direction of a pair (buying and selling are priced apart: the spread is the
    fees), priced in its quote token."""

    token_in: Token
    token_out: Token
    base: str
    quote: str

    @property
    def key(self) -> str:
        return f"{self.token_in.symbol}→{self.token_out.symbol}"


def chart_pair(token_in: Token, token_out: Token) -> ChartPair:
    def rank(symbol: str) -> int:
        return QUOTE_RANK.index(symbol) if symbol in QUOTE_RANK else len(QUOTE_RANK)

    a, b = token_in.symbol, token_out.symbol
    in_is_quote = rank(a) < rank(b) or (rank(a) == rank(b) and a < b)
    return ChartPair(
        token_in, token_out, base=b if in_is_quote else a, quote=a if in_is_quote else b
    )


@dataclass(frozen=True, slots=True)
class VenuePrice:
    price: float  # quote token per base token, fees included
    slot: int  # the view's slot when this price was first seen
    ts: float  # unix seconds, when it was first seen

    def to_json(self, dex: str) -> dict[str, Any]:
        return {"dex": dex, "price": self.price, "slot": self.slot, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class PairPrices:
    pair: ChartPair
    amount_in: int  # the reference trade, in base units of token_in
    venues: dict[str, VenuePrice]
    version: int  # the board version it last changed at

    def to_json(self) -> dict[str, Any]:
        return {
            "pair": self.pair.key,
            "tokenIn": self.pair.token_in.symbol,
            "tokenOut": self.pair.token_out.symbol,
            "base": self.pair.base,
            "quote": self.pair.quote,
            "amountIn": self.pair.token_in.format(self.amount_in),
            "prices": [price.to_json(dex) for dex, price in self.venues.items()],
        }


class PriceBoard:
    """Every charted pair's price on every venue, repriced after the pools move: at most
    once per `interval` while someone watches, on demand otherwise."""

    def __init__(
        self,
        data: MarketData,
        registry: TokenRegistry = REGISTRY,
        *,
        interval: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._data = data
        self._registry = registry
        self._interval = interval
        self._clock = clock
        self._prices: dict[str, PairPrices] = {}
        self._amounts: dict[str, int] = {}  # the reference trade of each pair, kept fixed
        self._pool_count = -1  # the pools the pair list was made from
        self._pairs: list[ChartPair] = []
        self.version = 0
        self._dirty = True
        self._last_reprice = -math.inf  # loop time
        self._scheduled: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self.watchers = 0
        data.on_update(self._moved)

    # -- what watchers read -----------------------------------------------------------

    def current(self) -> list[PairPrices]:
        """Every pair's prices, repriced first if a pool moved since."""
        if self._dirty:
            self._reprice()
        return list(self._prices.values())

    def since(self, version: int) -> list[PairPrices]:
        """The pairs that changed after `version`."""
        return [p for p in self._prices.values() if p.version > version]

    async def changed(self, version: int) -> None:
        """Until some pair changes after `version`."""
        while self.version <= version:
            await self._changed.wait()

    # -- repricing ----------------------------------------------------------------------

    def _moved(self, update: AccountUpdate) -> None:
        self._dirty = True
        if self.watchers and self._scheduled is None:
            loop = asyncio.get_running_loop()
            due = max(0.0, self._last_reprice + self._interval - loop.time())
            self._scheduled = loop.call_later(due, self._scheduled_reprice)

    def _scheduled_reprice(self) -> None:
        self._scheduled = None
        if self._dirty:
            self._reprice()

    def _reprice(self) -> None:
        self._dirty = False
        self._last_reprice = asyncio.get_running_loop().time()
        if len(self._data.pools) != self._pool_count:
            self._pairs = self._chart_pairs()
            self._pool_count = len(self._data.pools)
        venues = self._venues()
        version = self.version + 1
        now = self._clock()
        changed = False
        for pair in self._pairs:
            old = self._prices.get(pair.key)
            amount = self._amounts.get(pair.key) or self._reference_amount(pair, venues)
            if amount is None:
                continue
            self._amounts[pair.key] = amount
            prices = {}
            for venue in venues:
                price = self._price(venue, pair, amount)
                if price is None:
                    continue
                kept = old.venues.get(venue.name) if old is not None else None
                if kept is not None and kept.price == price:
                    prices[venue.name] = kept
                else:
                    prices[venue.name] = VenuePrice(price, self._data.slot, now)
            if old is None or prices != old.venues:
                self._prices[pair.key] = PairPrices(pair, amount, prices, version)
                changed = True
        if changed:
            self.version = version
            self._changed.set()
            self._changed = asyncio.Event()

    def _chart_pairs(self) -> list[ChartPair]:
        """Both directions of every pair some venue has a pool for, named as orders name
        them (SOL, not the wSOL pools hold)."""
        native = {self._registry.pool_token(t).symbol: t for t in self._registry if t.native}
        seen: set[tuple[str, str]] = set()
        pairs = []
        for _, pool in self._data.pools.values():
            try:
                x = native.get(pool.token_x) or self._registry.resolve(pool.token_x)
                y = native.get(pool.token_y) or self._registry.resolve(pool.token_y)
            except UnknownToken:
                continue  # orders cannot name it: nobody charts it
            for a, b in ((x, y), (y, x)):
                if (a.symbol, b.symbol) not in seen:
                    seen.add((a.symbol, b.symbol))
                    pairs.append(chart_pair(a, b))
        return sorted(pairs, key=lambda p: p.key)

    def _venues(self) -> list[SimulatedVenue]:
        names = dict.fromkeys(venue for venue, _ in self._data.pools.values())
        found = (self._data.venue(name) for name in names)
        return [venue for venue in found if venue is not None]

    def _reference_amount(self, pair: ChartPair, venues: Sequence[SimulatedVenue]) -> int | None:
        """One whole token in, or enough more that the output is precise: the same amount
        on every venue and at every update, so that the prices compare."""
        for venue in venues:
            amount = pair.token_in.scale
            for _ in range(4):
                try:
                    out = venue.best_quote(pair.token_in, pair.token_out, amount).amount_out
                except PermanentVenueError as exc:
                    if exc.code != AMOUNT_TOO_SMALL:
                        break
                    amount *= 1000
                    continue
                if out < PRECISION_UNITS:
                    amount = _round_up(-(-amount * PRECISION_UNITS // out))
                return amount
        return None

    @staticmethod
    def _price(venue: SimulatedVenue, pair: ChartPair, amount: int) -> float | None:
        try:
            quote = venue.best_quote(pair.token_in, pair.token_out, amount)
        except PermanentVenueError:
            return None
        if quote.price <= 0:
            return None
        return quote.price if pair.base == pair.token_in.symbol else 1 / quote.price


def _round_up(amount: int) -> int:
    """Up to 1, 2 or 5 times a power of ten: a reference size a person reads at a glance."""
    scale = int(10 ** (len(str(amount)) - 1))
    return next(step * scale for step in (1, 2, 5, 10) if amount <= step * scale)


class _Stale(Exception):
    """The streamed view fell behind the chain: its prices would mislead."""


def _stale() -> ApiError:
    return ApiError(
        503,
        "market_data_stale",
        "the streamed pools are not caught up with the chain, retry shortly",
        headers={"Retry-After": "1"},
    )


class MarketStreams:
    """`GET /api/market` and `GET /api/market/stream`; refused while there is no fresh
    streamed view (market data off, or not caught up)."""

    def __init__(
        self,
        data: MarketData | None,
        *,
        streams: OrderStreams,
        connections: Connections,
        interval: float = MIN_INTERVAL_S,
        registry: TokenRegistry = REGISTRY,
    ) -> None:
        self._data = data
        self._board = None if data is None else PriceBoard(data, registry, interval=interval)
        # The other WebSockets' admission, authentication and send timeout, shared.
        self._streams = streams
        self._connections = connections
        self._interval = interval

    async def prices(self, request: web.Request) -> web.Response:
        """GET /api/market: every pair's current prices, as the stream's first message."""
        return json_response(self._message(self._serving().current()))

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """GET /api/market/stream upgraded: every pair's prices, then the pairs that changed,
        at most once per interval."""
        ws = await self._streams.open(request)
        try:
            try:
                board = self._serving()
            except ApiError as exc:
                await self._streams.refuse(ws, request, exc, CLOSE_TRY_AGAIN)
                return ws
            board.watchers += 1
            try:
                await self._watch(ws, request, board)
            finally:
                board.watchers -= 1
        finally:
            self._connections.discard(ws)
        return ws

    def _serving(self) -> PriceBoard:
        if self._board is None or self._data is None:
            raise ApiError(
                503,
                "market_data_off",
                "this engine does not follow the pools' stream ([venues] quote_from_stream)",
            )
        if not self._data.fresh():
            raise _stale()
        return self._board

    async def _watch(
        self, ws: web.WebSocketResponse, request: web.BaseRequest, board: PriceBoard
    ) -> None:
        reader = asyncio.create_task(self._streams.drain_incoming(ws), name="market-read")
        pump = asyncio.create_task(self._pump(ws, board), name="market")
        try:
            await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, pump):
                task.cancel()
            await asyncio.gather(reader, pump, return_exceptions=True)
        error = None if pump.cancelled() else pump.exception()
        if isinstance(error, SlowConsumer):
            log.info("closing a market stream that does not read")
            abort_connection(request)
        elif isinstance(error, _Stale):
            await self._streams.refuse(ws, request, _stale(), CLOSE_TRY_AGAIN)
        elif error is not None and not ws.closed:
            log.error("market stream failed", exc_info=error)
            await close_socket(ws, request, WSCloseCode.INTERNAL_ERROR, b"internal error")

    async def _pump(self, ws: web.WebSocketResponse, board: PriceBoard) -> None:
        assert self._data is not None
        loop = asyncio.get_running_loop()
        first = self._message(board.current())
        sent = board.version
        await self.send(ws, first)
        next_at = loop.time() + self._interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FRESH_CHECK_S):
                    await board.changed(sent)
            if not self._data.fresh():
                raise _Stale
            if board.version <= sent:
                continue
            # Changes arriving meanwhile ride on this message: the rate stays bounded.
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            changed = board.since(sent)
            sent = board.version
            await self.send(ws, self._message(changed))
            next_at = loop.time() + self._interval

    def _message(self, pairs: Sequence[PairPrices]) -> dict[str, Any]:
        assert self._data is not None
        return {
            "slot": self._data.slot,
            "ts": time.time(),
            "pairs": [p.to_json() for p in pairs],
        }

    async def send(self, ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
        await self._streams.send(ws, message)

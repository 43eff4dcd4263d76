"""The simulated market as an HTTP service, so that several engine replicas share one chain
and one ledger, as they would share Solana.

Requests and answers are the JSON of `order_engine.venues.wire`. A venue or chain failure
answers `{"error": {"code", "message", "transient"}}` with 503 when a retry may help and 422
when it cannot; the remote adapter turns it back into the same exception. Input is checked
here before it reaches the market: the simulation trusts its callers, and a bad leg would
otherwise fail later inside a landing callback, leaving its transaction pending forever.

`GET /feed` is the chain's account stream over a WebSocket, in the JSON of
`order_engine.venues.feed_wire`, which replicas follow to quote locally.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from order_engine.venues.base import Quote, VenueError
from order_engine.venues.feed import (
    FeedClosed,
    FeedLagged,
    FeedMessage,
    FeedSubscription,
    Sequenced,
    Snapshot,
)
from order_engine.venues.feed_wire import CLOSE_LAGGED, encode_message
from order_engine.venues.market import SimulatedMarket
from order_engine.venues.tokens import TokenRegistry
from order_engine.venues.venue import SimulatedVenue
from order_engine.venues.wire import (
    BAD_REQUEST,
    NOT_FOUND,
    UNKNOWN_VENUE,
    Fields,
    WireError,
    ledger_entry_to_json,
    parse_amount,
    quote_from_fields,
    quote_to_json,
    status_to_json,
    tx_from_fields,
    tx_to_json,
)

log = logging.getLogger("order_engine.chain")

MARKET = web.AppKey("market", SimulatedMarket)

# A long poll longer than this risks proxies' idle timeouts; the client polls again.
MAX_WAIT_S = 30.0
# Far more than a split search asks for (20 steps, refined once), far less than abuse.
MAX_CURVE_POINTS = 1024
# SPL token amounts are u64 on chain.
U64_MAX = 2**64 - 1
MAX_DROPS = 1_000_000

# A subscriber that has not taken a frame within this long is not reading: dropped, so it
# cannot hold the chain's memory (aiohttp buffers at most its writer limit before waiting).
FEED_SEND_TIMEOUT_S = 5.0
# Pings find a subscriber whose host vanished without a word, which no send would notice
# before the kernel's buffers filled; the replicas answer them as they read.
FEED_HEARTBEAT_S = 15.0
FEED_CLOSE_TIMEOUT_S = 1.0
# Subscribers send nothing but control frames.
FEED_MAX_INCOMING_BYTES = 4096
# The frames of the latest messages, kept for the subscribers sending them.
FEED_FRAME_CACHE = 4096
_STREAM_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refusal(Exception):
    """A request the service will not serve, with its HTTP status and error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class FeedFrames:
    """Each message of the feed encoded once, however many subscribers send it: they all
    read the same few latest messages, so a small ring of recent frames serves them."""

    def __init__(self, size: int = FEED_FRAME_CACHE) -> None:
        self._ring: list[tuple[Sequenced, bytes] | None] = [None] * size
        self.encoded = 0  # messages encoded, for tests of the sharing

    def frame(self, message: FeedMessage) -> bytes:
        if isinstance(message, Snapshot):  # one per subscription, never shared
            self.encoded += 1
            return encode_message(message)
        i = message.seq % len(self._ring)
        held = self._ring[i]
        # By identity: a seq is a message of the one feed this service runs, but identity
        # costs nothing and cannot be fooled.
        if held is not None and held[0] is message:
            return held[1]
        frame = encode_message(message)
        self.encoded += 1
        self._ring[i] = (message, frame)
        return frame


class FeedSockets:
    """The open feed WebSockets (closed with 1001 on shutdown) and their shared frames."""

    def __init__(self) -> None:
        self.frames = FeedFrames()
        self.open: dict[web.WebSocketResponse, web.BaseRequest] = {}

    async def close_all(self) -> None:
        await asyncio.gather(
            *(
                _close_feed(ws, request, WSCloseCode.GOING_AWAY, b"chain service shutting down")
                for ws, request in list(self.open.items())
            ),
            return_exceptions=True,
        )


FEEDS = web.AppKey("feeds", FeedSockets)


def build_chain_app(market: SimulatedMarket) -> web.Application:
    app = web.Application(middlewares=[_error_middleware])
    app[MARKET] = market
    app[FEEDS] = FeedSockets()
    app.cleanup_ctx.append(_market_lifecycle)
    app.on_shutdown.append(_close_feeds)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/feed", _feed)
    app.router.add_post("/venues/{name}/quote", _quote)
    app.router.add_post("/venues/{name}/quote_curve", _quote_curve)
    app.router.add_post("/tx/build", _build)
    app.router.add_post("/tx/submit", _submit)
    app.router.add_get("/tx/{signature}", _status)
    app.router.add_get("/tx/{signature}/wait", _wait)
    app.router.add_post("/admin/hold", _hold)
    app.router.add_post("/admin/release", _release)
    app.router.add_post("/admin/drop_next", _drop_next)
    app.router.add_post("/admin/faults/{name}", _faults)
    app.router.add_get("/admin/ledger", _ledger)
    return app


async def _market_lifecycle(app: web.Application) -> AsyncIterator[None]:
    market = app[MARKET]
    await market.start()
    try:
        yield
    finally:
        await market.stop()


# -- errors --------------------------------------------------------------------------------


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, *, transient: bool) -> web.Response:
    error = {"code": code, "message": message, "transient": transient}
    return json_response({"error": error}, status)


_HTTP_CODES = {404: NOT_FOUND, 405: "method_not_allowed", 413: "body_too_large"}


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except VenueError as exc:
        status = 503 if exc.transient else 422
        return error_response(status, exc.code, exc.message, transient=exc.transient)
    except WireError as exc:
        return error_response(400, BAD_REQUEST, str(exc), transient=False)
    except Refusal as exc:
        return error_response(exc.status, exc.code, exc.message, transient=False)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason, transient=exc.status >= 500)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response


# -- input ---------------------------------------------------------------------------------


async def _body(request: web.Request) -> Fields:
    raw = await request.read()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise WireError("the body is not valid JSON") from None
    return Fields(value)


def _trade_amount(value: int, where: str, *, low: int = 1) -> int:
    if not low <= value <= U64_MAX:
        raise WireError(f"{where}: must be between {low} and {U64_MAX} base units")
    return value


def _venue(request: web.Request) -> SimulatedVenue:
    name = request.match_info["name"]
    venue = request.app[MARKET].venues.get(name)
    if venue is None:
        known = ", ".join(sorted(request.app[MARKET].venues))
        raise Refusal(404, UNKNOWN_VENUE, f"no venue named {name!r} (known: {known})")
    return venue


def _check_legs(market: SimulatedMarket, legs: Sequence[Quote], where: str) -> None:
    """Every leg must be executable by the chain: a known venue, a connected path of that
    venue's pools, one token pair for the whole transaction."""
    if not legs:
        raise WireError(f"{where}: a transaction needs at least one leg")
    first = legs[0]
    for i, leg in enumerate(legs):
        at = f"{where}[{i}]"
        venue = market.venues.get(leg.venue)
        if venue is None:
            raise WireError(f"{at}.venue: unknown venue {leg.venue!r}")
        if (leg.token_in, leg.token_out) != (first.token_in, first.token_out):
            raise WireError(f"{at}: every leg must swap the same pair as the first")
        _trade_amount(leg.amount_in, f"{at}.amountIn")
        _check_hops(venue, leg, at)


def _check_hops(venue: SimulatedVenue, leg: Quote, where: str) -> None:
    if not leg.hops:
        raise WireError(f"{where}.hops: a leg needs at least one hop")
    token = TokenRegistry.pool_token(leg.token_in).symbol
    for i, hop in enumerate(leg.hops):
        pool = venue.pools.get(hop.pool_id)
        if pool is None:
            raise WireError(f"{where}.hops[{i}].poolId: {venue.name} has no pool {hop.pool_id!r}")
        if hop.token_in != token or {hop.token_in, hop.token_out} != {pool.token_x, pool.token_y}:
            raise WireError(f"{where}.hops[{i}]: does not continue the path through its pool")
        token = hop.token_out
    if token != TokenRegistry.pool_token(leg.token_out).symbol:
        raise WireError(f"{where}.hops: the path does not end in {leg.token_out.symbol}")


def _wait_timeout(request: web.Request) -> float:
    text = request.query.get("timeout")
    if text is None:
        return MAX_WAIT_S
    try:
        timeout = float(text)
    except ValueError:
        raise WireError(f"timeout: {text!r} is not a number of seconds") from None
    if not math.isfinite(timeout) or timeout < 0:
        raise WireError("timeout: must be a finite number of seconds, at least 0")
    return min(timeout, MAX_WAIT_S)


# -- handlers ------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    market = request.app[MARKET]
    return json_response(
        {
            "status": "ok",
            "profile": market.profile.name,
            "venues": sorted(market.venues),
            "slot": market.chain.current_slot(),
        }
    )


async def _quote(request: web.Request) -> web.Response:
    venue = _venue(request)
    f = await _body(request)
    token_in, token_out = f.token("tokenIn"), f.token("tokenOut")
    amount = _trade_amount(f.amount("amountIn"), "amountIn")
    quote = await venue.quote(token_in, token_out, amount)
    return json_response({"quote": quote_to_json(quote)})


async def _quote_curve(request: web.Request) -> web.Response:
    venue = _venue(request)
    f = await _body(request)
    token_in, token_out = f.token("tokenIn"), f.token("tokenOut")
    raw = f.items("amounts")
    if len(raw) > MAX_CURVE_POINTS:
        raise WireError(f"amounts: at most {MAX_CURVE_POINTS} sizes per request")
    amounts = [
        _trade_amount(parse_amount(value, f"amounts[{i}]"), f"amounts[{i}]")
        for i, value in enumerate(raw)
    ]
    quotes = await venue.quote_curve(token_in, token_out, amounts)
    return json_response({"quotes": [None if q is None else quote_to_json(q) for q in quotes]})


async def _build(request: web.Request) -> web.Response:
    market = request.app[MARKET]
    f = await _body(request)
    legs = f.each("legs", quote_from_fields)
    _check_legs(market, legs, "legs")
    min_out = _trade_amount(f.amount("minOut"), "minOut", low=0)
    tx = await market.chain.build(legs, min_out)
    return json_response({"tx": tx_to_json(tx)})


async def _submit(request: web.Request) -> web.Response:
    market = request.app[MARKET]
    f = await _body(request)
    tx = tx_from_fields(f.nested("tx"))
    _check_legs(market, tx.legs, "tx.legs")
    _trade_amount(tx.min_out, "tx.minOut", low=0)
    signature = await market.chain.submit(tx)
    return json_response({"signature": signature})


async def _status(request: web.Request) -> web.Response:
    chain = request.app[MARKET].chain
    status = await chain.status(request.match_info["signature"])
    return json_response({"status": status_to_json(status)})


async def _wait(request: web.Request) -> web.Response:
    chain = request.app[MARKET].chain
    timeout = _wait_timeout(request)
    status = await chain.wait(request.match_info["signature"], timeout)
    return json_response({"status": status_to_json(status)})


# -- the account stream --------------------------------------------------------------------


class _SlowReader(Exception):
    """The subscriber did not take a frame within the send timeout."""


def _feed_query(request: web.Request) -> tuple[int | None, str | None]:
    after_text, stream_id = request.query.get("after"), request.query.get("stream")
    after = None
    if after_text is not None:
        after = parse_amount(after_text, "after")
        if not 0 <= after <= 2**63 - 1:
            raise WireError("after: must be a seq, 0 or more")
    if stream_id is not None and not _STREAM_ID.fullmatch(stream_id):
        raise WireError("stream: not a stream id")
    return after, stream_id


async def _feed(request: web.Request) -> web.StreamResponse:
    """GET /feed?after=&stream= upgraded: a snapshot, then every message of the account
    stream in order; or, resuming `stream` after the seq `after` while the chain still
    holds what followed it, those messages directly. One JSON message per text frame. A
    subscriber that falls behind is closed with CLOSE_LAGGED, and resubscribes after the
    last message it applied; one that stops reading is dropped."""
    after, stream_id = _feed_query(request)
    ws = web.WebSocketResponse(
        heartbeat=FEED_HEARTBEAT_S, max_msg_size=FEED_MAX_INCOMING_BYTES, compress=False
    )
    if not ws.can_prepare(request).ok:
        raise Refusal(400, BAD_REQUEST, "/feed speaks WebSocket: send an Upgrade request")
    feeds = request.app[FEEDS]
    # Subscribed before the handshake: the snapshot is no older than the connection.
    with request.app[MARKET].feed.subscribe(after_seq=after, stream_id=stream_id) as sub:
        await ws.prepare(request)
        feeds.open[ws] = request
        reader = asyncio.create_task(_drain(ws), name="feed-read")
        pump = asyncio.create_task(_pump(ws, sub, feeds.frames), name="feed")
        try:
            try:
                await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the handler is cancelled: its peer went away
                for task in (reader, pump):
                    task.cancel()
                await asyncio.gather(reader, pump, return_exceptions=True)
            error = None if pump.cancelled() else pump.exception()
            if isinstance(error, FeedLagged):
                reason = f"lagged after seq {error.last_seq}: resubscribe"
                await _close_feed(ws, request, CLOSE_LAGGED, reason.encode())
            elif isinstance(error, _SlowReader):
                log.info("dropping a feed subscriber that does not read")
                _abort(request)
            elif isinstance(error, FeedClosed):
                await _close_feed(ws, request, WSCloseCode.GOING_AWAY, b"feed closed")
            elif error is not None and not isinstance(error, ConnectionError):
                log.error("feed subscription failed", exc_info=error)
                await _close_feed(ws, request, WSCloseCode.INTERNAL_ERROR, b"internal error")
        finally:
            feeds.open.pop(ws, None)
    return ws


async def _pump(ws: web.WebSocketResponse, sub: FeedSubscription, frames: FeedFrames) -> None:
    while True:
        frame = frames.frame(await sub.next())
        try:
            async with asyncio.timeout(FEED_SEND_TIMEOUT_S):
                await ws.send_frame(frame, WSMsgType.TEXT)
        except TimeoutError:
            raise _SlowReader from None


async def _drain(ws: web.WebSocketResponse) -> None:
    """Reading is what answers pings and takes the subscriber's close; it sends nothing
    else that means anything."""
    async for _ in ws:
        pass


async def _close_feed(
    ws: web.WebSocketResponse, request: web.BaseRequest, code: int, message: bytes
) -> None:
    try:
        async with asyncio.timeout(FEED_CLOSE_TIMEOUT_S):
            await ws.close(code=code, message=message)
    except TimeoutError:
        _abort(request)  # a peer that does not read cannot take the close frame either


def _abort(request: web.BaseRequest) -> None:
    """Drop the connection and what is queued for it: a graceful close would first wait
    for a peer that does not read to take that, which may be never."""
    transport = request.transport
    if transport is not None:  # None: the connection is already gone
        transport.abort()


async def _close_feeds(app: web.Application) -> None:
    await app[FEEDS].close_all()


# -- test and admin controls ---------------------------------------------------------------


async def _hold(request: web.Request) -> web.Response:
    request.app[MARKET].chain.hold()
    return json_response({"held": True})


async def _release(request: web.Request) -> web.Response:
    request.app[MARKET].chain.release()
    return json_response({"held": False})


async def _drop_next(request: web.Request) -> web.Response:
    count = (await _body(request)).integer("count")
    if not 0 <= count <= MAX_DROPS:
        raise WireError(f"count: must be between 0 and {MAX_DROPS}")
    request.app[MARKET].chain.drop_next(count)
    return json_response({"dropNext": count})


async def _faults(request: web.Request) -> web.Response:
    venue = _venue(request)
    f = await _body(request)
    # Read both before changing either: a bad request changes nothing.
    down = f.flag("down") if f.has("down") else venue.faults.down
    timeout = f.flag("timeout") if f.has("timeout") else venue.faults.timeout
    venue.faults.down, venue.faults.timeout = down, timeout
    return json_response({"venue": venue.name, "down": down, "timeout": timeout})


async def _ledger(request: web.Request) -> web.Response:
    chain = request.app[MARKET].chain
    entries = [ledger_entry_to_json(entry) for entry in chain.ledger]
    return json_response({"slot": chain.current_slot(), "entries": entries})

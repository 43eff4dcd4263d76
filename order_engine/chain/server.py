"""The simulated market as an HTTP service, so that several engine replicas share one chain
and one ledger, as they would share Solana.

Requests and answers are the JSON of `order_engine.venues.wire`. A venue or chain failure
answers `{"error": {"code", "message", "transient"}}` with 503 when a retry may help and 422
when it cannot; the remote adapter turns it back into the same exception. Input is checked
here before it reaches the market: the simulation trusts its callers, and a bad leg would
otherwise fail later inside a landing callback, leaving its transaction pending forever.

`GET /feed` is the chain's account stream over a WebSocket (`order_engine.chain.feed`).

`/admin/*` are the test and demo controls: hold and release landings, drop transactions,
fault a venue, read the ledger, wait until a transaction is received (recorded: it will
land whatever happens to the service); move a price, launch a token and list the tokens (the
market's `controls`: a refusal names its `field`, as `RemoteMarket` reads it back).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web

from order_engine.chain.feed import FEEDS, FeedSockets, close_feeds, feed
from order_engine.chain.shared import MARKET, Refusal
from order_engine.venues.base import Quote, VenueError
from order_engine.venues.controls import (
    ControlError,
    launch_to_json,
    listing_to_json,
    move_to_json,
)
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


# A long poll longer than this risks proxies' idle timeouts; the client polls again.
MAX_WAIT_S = 30.0
# Far more than a split search asks for (20 steps, refined once), far less than abuse.
MAX_CURVE_POINTS = 1024
# SPL token amounts are u64 on chain.
U64_MAX = 2**64 - 1
MAX_DROPS = 1_000_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def build_chain_app(market: SimulatedMarket) -> web.Application:
    app = web.Application(middlewares=[_error_middleware])
    app[MARKET] = market
    app[FEEDS] = FeedSockets()
    app.cleanup_ctx.append(_market_lifecycle)
    app.on_shutdown.append(close_feeds)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/feed", feed)
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
    app.router.add_get("/admin/received/{signature}", _received)
    app.router.add_post("/admin/move", _move)
    app.router.add_post("/admin/launch", _launch)
    app.router.add_get("/admin/tokens", _tokens)
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
    except ControlError as exc:
        error = {"code": exc.code, "message": exc.message, "transient": False, "field": exc.field}
        return json_response({"error": error}, exc.status)
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


def _control_input(read: Callable[[str], T], key: str) -> T:
    """A control's input: a refusal names the field, as the market's own refusals do."""
    try:
        return read(key)
    except WireError as exc:
        raise ControlError(key, BAD_REQUEST, str(exc)) from None


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


async def _received(request: web.Request) -> web.Response:
    """Until the chain has recorded the signature as received, or `timeout` seconds."""
    signature = request.match_info["signature"]
    try:
        await request.app[MARKET].chain.received(signature, _wait_timeout(request))
    except TimeoutError:
        raise Refusal(404, NOT_FOUND, f"the chain has not received {signature}") from None
    return json_response({"received": True})


async def _move(request: web.Request) -> web.Response:
    f = await _body(request)
    token_a = _control_input(f.text, "tokenA")
    token_b = _control_input(f.text, "tokenB")
    bps = _control_input(f.number, "bps")
    move = request.app[MARKET].move_price(token_a, token_b, bps)
    return json_response({"move": move_to_json(move)})


async def _launch(request: web.Request) -> web.Response:
    f = await _body(request)
    token = _control_input(f.text, "token")
    venue = _control_input(f.text, "venue") if f.has("venue") else None
    liquidity = _control_input(f.number, "liquidityUsd") if f.has("liquidityUsd") else None
    launch = request.app[MARKET].launch(token, venue, liquidity)
    return json_response({"launch": launch_to_json(launch)})


async def _tokens(request: web.Request) -> web.Response:
    listing = request.app[MARKET].registry.listing()
    return json_response({"tokens": [listing_to_json(entry) for entry in listing]})

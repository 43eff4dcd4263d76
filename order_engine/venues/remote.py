"""Venues and a chain that live in another process: the chain service
(`python -m order_engine.chain`), shared by every engine replica. A real RPC or DEX adapter
would take this module's place. The chain's account stream comes over the service's
`/feed` WebSocket (`RemoteFeedSource`), as a Solana node's accountSubscribe would.

Failures keep their meaning across the wire: an error the service answers is re-raised as
the same code and transience. When the service cannot be reached, or answers something that
is not ours to read, the call raises a transient `venue_down`: the engine retries a quote,
and for a transaction asks again later. A status is never guessed, since reporting
"unknown" for a transaction that may yet land could make the engine send the swap twice.

The market's controls (move a price, launch a token, list the tokens) go to the service's
`/admin` endpoints; a refusal comes back as the same `ControlError`. Which upcoming tokens
are tradable here follows the account stream (`note_launches`): a launch on the service is
known to this process once the stream brings the new pool, before anything applies it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import quote as quote_path

import aiohttp
import orjson

from order_engine.venues.base import (
    VENUE_DOWN,
    PermanentVenueError,
    Quote,
    TransientVenueError,
    Tx,
    TxState,
    TxStatus,
    VenueError,
)
from order_engine.venues.controls import (
    ControlError,
    Launch,
    PriceMove,
    launch_from_fields,
    listing_from_fields,
    move_from_fields,
)
from order_engine.venues.feed import FeedBroken, FeedMessage
from order_engine.venues.feed_wire import decode_message
from order_engine.venues.launches import note_launches
from order_engine.venues.market import VENUE_NAMES
from order_engine.venues.tokens import REGISTRY, Listing, Token, TokenRegistry
from order_engine.venues.wire import (
    BAD_REQUEST,
    Fields,
    WireError,
    amount_json,
    error_from_fields,
    quote_from_fields,
    quote_to_json,
    status_from_fields,
    tx_from_fields,
    tx_to_json,
)

T = TypeVar("T")

# A session, or where to get it once it exists: RemoteMarket hands out its venues before
# `start()` opens the session (the engine wires them up at construction).
SessionSource = aiohttp.ClientSession | Callable[[], aiohttp.ClientSession]
# How a caller reads a refusal of its own kind (status, body), if it is one.
Refusal = Callable[[int, bytes], Exception | None]

DEFAULT_REQUEST_TIMEOUT_S = 10.0
# The service caps one long poll at 30 s; `wait` asks again until its own deadline.
LONG_POLL_S = 30.0
# The stream says the slot every 400 ms even when no pool moves: ten slots of silence
# mean the connection is dead, whatever TCP believes.
FEED_SILENCE_S = 4.0
FEED_CONNECT_TIMEOUT_S = 5.0
# A close is a courtesy: a dead connection must not hold the follower up for long.
FEED_CLOSE_TIMEOUT_S = 1.0
# A snapshot grows with the pools (tens of kB today); far above that, far below abuse.
FEED_MAX_MESSAGE_BYTES = 64 * 2**20


class ChainServiceUnavailable(RuntimeError):
    """The chain service cannot be reached or is not a chain service: nothing can trade."""


class _Service:
    """Calls to one service over a shared session, and how their failures map."""

    def __init__(
        self,
        session: SessionSource,
        base_url: str,
        timeout: float,
        what: str,
        registry: TokenRegistry = REGISTRY,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self.what = what
        self.registry = registry  # what tokens in answers resolve against

    def session(self) -> aiohttp.ClientSession:
        source = self._session
        return source if isinstance(source, aiohttp.ClientSession) else source()

    async def call(
        self,
        method: str,
        path: str,
        decode: Callable[[Fields], T],
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        extra_time: float = 0.0,
        refusal: Refusal | None = None,
    ) -> T:
        status, raw = await self._exchange(method, path, body, params, extra_time)
        if status >= 300:
            refused = refusal(status, raw) if refusal is not None else None
            raise refused or _error_from_response(status, raw, self.what)
        try:
            return decode(Fields(orjson.loads(raw), registry=self.registry))
        except (orjson.JSONDecodeError, WireError) as exc:
            raise TransientVenueError(
                VENUE_DOWN, f"{self.what} sent a malformed answer: {exc}"
            ) from exc

    async def _exchange(
        self,
        method: str,
        path: str,
        body: Any,
        params: Mapping[str, str] | None,
        extra_time: float,
    ) -> tuple[int, bytes]:
        timeout = self._timeout + extra_time
        try:
            async with self.session().request(
                method,
                self._base_url + path,
                data=None if body is None else orjson.dumps(body),
                headers={"Content-Type": "application/json"} if body is not None else None,
                params=params,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's own deadline; a caller's arrives as cancel
            raise TransientVenueError(
                VENUE_DOWN, f"{self.what} did not answer within {timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise TransientVenueError(VENUE_DOWN, f"{self.what} is unreachable: {exc}") from exc


def _error_from_response(status: int, raw: bytes, what: str) -> VenueError:
    try:
        return error_from_fields(Fields(orjson.loads(raw)).nested("error"))
    except (orjson.JSONDecodeError, WireError):
        pass
    if status >= 500:
        return TransientVenueError(VENUE_DOWN, f"{what} answered HTTP {status}")
    return PermanentVenueError(BAD_REQUEST, f"{what} refused the request with HTTP {status}")


class RemoteVenue:
    """The Venue protocol over the chain service's `/venues/{name}` endpoints."""

    def __init__(
        self,
        name: str,
        session: SessionSource,
        base_url: str,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        registry: TokenRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self._service = _Service(session, base_url, timeout, f"venue {name}", registry)
        self._path = f"/venues/{quote_path(name, safe='')}"

    async def quote(self, token_in: Token, token_out: Token, amount_in: int) -> Quote:
        body = {
            "tokenIn": token_in.symbol,
            "tokenOut": token_out.symbol,
            "amountIn": amount_json(amount_in),
        }
        return await self._service.call(
            "POST", f"{self._path}/quote", lambda f: quote_from_fields(f.nested("quote")), body=body
        )

    async def quote_curve(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None]:
        body = {
            "tokenIn": token_in.symbol,
            "tokenOut": token_out.symbol,
            "amounts": [amount_json(amount) for amount in amounts_in],
        }

        def decode(f: Fields) -> list[Quote | None]:
            quotes = f.items("quotes")
            if len(quotes) != len(amounts_in):
                raise WireError(f"quotes: {len(quotes)} answers for {len(amounts_in)} sizes")
            return [
                None
                if item is None
                else quote_from_fields(Fields(item, f"quotes[{i}]", self._service.registry))
                for i, item in enumerate(quotes)
            ]

        return await self._service.call("POST", f"{self._path}/quote_curve", decode, body=body)


class RemoteChain:
    """The Chain protocol over the chain service's `/tx` endpoints."""

    def __init__(
        self,
        session: SessionSource,
        base_url: str,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        registry: TokenRegistry = REGISTRY,
    ) -> None:
        self._service = _Service(session, base_url, timeout, "the chain service", registry)

    async def build(self, legs: Sequence[Quote], min_out: int) -> Tx:
        body = {"legs": [quote_to_json(leg) for leg in legs], "minOut": amount_json(min_out)}
        return await self._service.call(
            "POST", "/tx/build", lambda f: tx_from_fields(f.nested("tx")), body=body
        )

    async def submit(self, tx: Tx) -> str:
        return await self._service.call(
            "POST", "/tx/submit", lambda f: f.text("signature"), body={"tx": tx_to_json(tx)}
        )

    async def status(self, signature: str) -> TxStatus:
        return await self._status(f"/tx/{quote_path(signature, safe='')}", None, 0.0)

    async def can_still_land(self, signature: str, last_valid_slot: int) -> bool:
        # Over a network a transaction may still be in flight: only the chain's slot
        # passing its blockhash's last valid one settles that it never will land.
        slot: int = await self._service.call("GET", "/healthz", lambda f: f.integer("slot"))
        return slot <= last_valid_slot

    async def wait(self, signature: str, timeout: float) -> TxStatus:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        path = f"/tx/{quote_path(signature, safe='')}/wait"
        while True:
            poll = min(max(deadline - loop.time(), 0.0), LONG_POLL_S)
            status = await self._status(path, {"timeout": repr(poll)}, poll)
            if status.state is not TxState.PENDING or loop.time() >= deadline:
                return status

    async def _status(
        self, path: str, params: Mapping[str, str] | None, extra_time: float
    ) -> TxStatus:
        try:
            return await self._service.call(
                "GET",
                path,
                lambda f: status_from_fields(f.nested("status")),
                params=params,
                extra_time=extra_time,
            )
        except PermanentVenueError as exc:
            # Whatever the refusal, the transaction's fate is still open: ask again later.
            raise TransientVenueError(
                VENUE_DOWN, f"the chain service could not answer for a transaction: {exc}"
            ) from exc


class RemoteFeedSource:
    """The chain service's account stream (its `/feed` WebSocket) as a `FeedSource`.

    Whatever ends a subscription from outside, it ends in `FeedBroken`, for the follower
    to resubscribe after the last message it applied: the connection refused or lost,
    the service closing it (a lagging subscriber, a shutdown), a message that is not ours
    to read, or silence longer than `silence_s`."""

    def __init__(
        self,
        session: SessionSource,
        base_url: str,
        *,
        silence_s: float = FEED_SILENCE_S,
        connect_timeout: float = FEED_CONNECT_TIMEOUT_S,
        registry: TokenRegistry | None = REGISTRY,
    ) -> None:
        """`registry` (None: none) learns from the stream which upcoming tokens the
        service's pools have made tradable."""
        self._session = session
        self.url = base_url.rstrip("/") + "/feed"
        self._silence_s = silence_s
        self._connect_timeout = connect_timeout
        self._registry = registry

    @asynccontextmanager
    async def subscribe(
        self, after_seq: int | None, stream_id: str | None
    ) -> AsyncIterator[RemoteFeedSubscription]:
        params = {}
        if after_seq is not None:
            params["after"] = str(after_seq)
        if stream_id is not None:
            params["stream"] = stream_id
        try:
            async with asyncio.timeout(self._connect_timeout):
                ws = await self._session_now().ws_connect(
                    self.url,
                    params=params,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=FEED_CLOSE_TIMEOUT_S),
                    autoping=True,
                    max_msg_size=FEED_MAX_MESSAGE_BYTES,
                    # orjson reads the frame's bytes: no str made per message.
                    decode_text=False,
                )
        except TimeoutError as exc:
            raise FeedBroken(
                f"the chain service's stream did not open within {self._connect_timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise FeedBroken(f"cannot subscribe to {self.url}: {exc}") from exc
        try:
            yield RemoteFeedSubscription(ws, self._silence_s, self._registry)
        finally:
            await ws.close()

    def _session_now(self) -> aiohttp.ClientSession:
        source = self._session
        return source if isinstance(source, aiohttp.ClientSession) else source()


class RemoteFeedSubscription:
    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse[bool],
        silence_s: float,
        registry: TokenRegistry | None = None,
    ) -> None:
        self._ws = ws
        self._silence_s = silence_s
        self._registry = registry

    async def next(self) -> FeedMessage:
        """The next message. Raises FeedBroken once the stream can bring no more."""
        try:
            msg = await self._ws.receive(timeout=self._silence_s)
        except TimeoutError as exc:
            raise FeedBroken(
                f"the chain service's stream was silent for {self._silence_s:g} s"
            ) from exc
        if msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
            try:
                message = decode_message(msg.data)
            except WireError as exc:
                raise FeedBroken(f"the chain service sent an unreadable message: {exc}") from exc
            if self._registry is not None:
                # Before anyone applies the message: whoever reacts to a new pool (a
                # sniper's trigger) finds its token tradable.
                note_launches(self._registry, message)
            return message
        if msg.type is aiohttp.WSMsgType.ERROR:
            raise FeedBroken(f"the chain service's stream failed: {msg.data}")
        reason = f": {msg.extra}" if msg.type is aiohttp.WSMsgType.CLOSE and msg.extra else ""
        raise FeedBroken(
            f"the chain service closed the stream (code {self._ws.close_code}{reason})"
        )


class RemoteMarket:
    """The chain service as a market: duck-compatible with SimulatedMarket for `.venues`,
    `.chain`, `start()` and `stop()`; its account stream is `.feed_source`; its controls
    (`MarketControls`) are its own async methods."""

    def __init__(
        self,
        url: str,
        *,
        venue_names: Sequence[str] = VENUE_NAMES,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        registry: TokenRegistry = REGISTRY,
    ) -> None:
        """`registry`: what the service's answers name tokens from, kept in step with its
        launches by the account stream (see RemoteFeedSource)."""
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        session = self._require_session
        self.venues = {
            name: RemoteVenue(name, session, self.url, timeout=timeout, registry=registry)
            for name in venue_names
        }
        self.chain = RemoteChain(session, self.url, timeout=timeout, registry=registry)
        self.feed_source = RemoteFeedSource(session, self.url, registry=registry)
        self._admin = _Service(session, self.url, timeout, "the chain service", registry)

    @property
    def controls(self) -> RemoteMarket:
        return self

    async def move_price(self, token_a: str, token_b: str, bps: float) -> PriceMove:
        body = {"tokenA": token_a, "tokenB": token_b, "bps": bps}
        return await self._admin.call(
            "POST",
            "/admin/move",
            lambda f: move_from_fields(f.nested("move")),
            body=body,
            refusal=_control_refusal,
        )

    async def launch(
        self, token: str, venue: str | None = None, liquidity_usd: float | None = None
    ) -> Launch:
        body: dict[str, Any] = {"token": token}
        if venue is not None:
            body["venue"] = venue
        if liquidity_usd is not None:
            body["liquidityUsd"] = liquidity_usd
        return await self._admin.call(
            "POST",
            "/admin/launch",
            lambda f: launch_from_fields(f.nested("launch")),
            body=body,
            refusal=_control_refusal,
        )

    async def tokens(self) -> tuple[Listing, ...]:
        return await self._admin.call(
            "GET", "/admin/tokens", lambda f: f.each("tokens", listing_from_fields)
        )

    async def start(self) -> None:
        if self._session is not None:
            return
        # Unlimited connections: every transaction awaiting confirmation holds one long
        # poll, and a pool capped below that would starve quotes behind them.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            await self._check_health(session)
        except BaseException:
            await session.close()
            raise
        self._session = session

    async def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RemoteMarket.start() must be awaited before trading")
        return self._session

    async def _check_health(self, session: aiohttp.ClientSession) -> None:
        service = _Service(session, self.url, self._timeout, f"the chain service at {self.url}")
        try:
            served = await service.call("GET", "/healthz", lambda f: f.items("venues"))
        except VenueError as exc:
            raise ChainServiceUnavailable(
                f"{exc.message} (is `python -m order_engine.chain` running there?)"
            ) from exc
        missing = sorted(set(self.venues) - set(map(str, served)))
        if missing:
            raise ChainServiceUnavailable(
                f"the chain service at {self.url} has no venue {', '.join(missing)}"
            )


def _control_refusal(status: int, raw: bytes) -> ControlError | None:
    """The service's refusal of a control, naming the field at fault; None if it is not one."""
    try:
        error = Fields(orjson.loads(raw)).nested("error")
        if not error.has("field"):
            return None
        return ControlError(error.text("field"), error.text("code"), error.text("message"), status)
    except (orjson.JSONDecodeError, WireError):
        return None

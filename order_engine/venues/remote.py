"""The market in another process: the chain service (`python -m order_engine.chain`), shared
by every engine replica. `RemoteMarket` puts together its venues and chain over HTTP
(`remote_clients`) and its account stream over the `/feed` WebSocket (`remote_feed`); a real
RPC or DEX adapter would take the place of these modules.

The market's controls (move a price, launch a token, list the tokens) go to the service's
`/admin` endpoints; a refusal comes back as the same `ControlError`. Which upcoming tokens
are tradable here follows the account stream (see `remote_feed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import aiohttp
import orjson

from order_engine.venues.base import VenueError
from order_engine.venues.controls import (
    ControlError,
    Launch,
    PriceMove,
    launch_from_fields,
    listing_from_fields,
    move_from_fields,
)
from order_engine.venues.market import VENUE_NAMES
from order_engine.venues.remote_clients import (
    DEFAULT_REQUEST_TIMEOUT_S,
    RemoteChain,
    RemoteVenue,
    ServiceClient,
)
from order_engine.venues.remote_feed import RemoteFeedSource
from order_engine.venues.tokens import REGISTRY, Listing, TokenRegistry
from order_engine.venues.wire import Fields, WireError

T = TypeVar("T")


class ChainServiceUnavailable(RuntimeError):
    """The chain service cannot be reached or is not a chain service: nothing can trade."""


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
        self._admin = ServiceClient(session, self.url, timeout, "the chain service", registry)

    @property
    def controls(self) -> RemoteMarket:
        return self

    async def move_price(self, token_a: str, token_b: str, bps: float) -> PriceMove:
        body = {"tokenA": token_a, "tokenB": token_b, "bps": bps}
        return await self._control("move", move_from_fields, body)

    async def launch(
        self, token: str, venue: str | None = None, liquidity_usd: float | None = None
    ) -> Launch:
        body: dict[str, Any] = {"token": token}
        if venue is not None:
            body["venue"] = venue
        if liquidity_usd is not None:
            body["liquidityUsd"] = liquidity_usd
        return await self._control("launch", launch_from_fields, body)

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

    async def _control(
        self, name: str, decode: Callable[[Fields], T], body: Mapping[str, Any]
    ) -> T:
        """POST /admin/{name}: the answer's `name` object, decoded; a refusal as ControlError."""
        return await self._admin.call(
            "POST",
            f"/admin/{name}",
            lambda f: decode(f.nested(name)),
            body=body,
            refusal=_control_refusal,
        )

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RemoteMarket.start() must be awaited before trading")
        return self._session

    async def _check_health(self, session: aiohttp.ClientSession) -> None:
        service = ServiceClient(
            session, self.url, self._timeout, f"the chain service at {self.url}"
        )
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

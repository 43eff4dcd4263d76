"""The chain service's venues and chain over HTTP: the `Venue` protocol on its
`/venues/{name}` endpoints, the `Chain` protocol on its `/tx` endpoints, and the one call
path (`ServiceClient`) they share with the remote market's controls.

Failures keep their meaning across the wire: an error the service answers is re-raised as
the same code and transience. When the service cannot be reached, or answers something that
is not ours to read, the call raises a transient `venue_down`: the engine retries a quote,
and for a transaction asks again later. A status is never guessed, since reporting
"unknown" for a transaction that may yet land could make the engine send the swap twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
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
from order_engine.venues.tokens import REGISTRY, Token, TokenRegistry
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


def session_of(source: SessionSource) -> aiohttp.ClientSession:
    """The session itself, or the one `source` hands out now."""
    return source if isinstance(source, aiohttp.ClientSession) else source()


class ServiceClient:
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
            async with session_of(self._session).request(
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
        self._service = ServiceClient(session, base_url, timeout, f"venue {name}", registry)
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
        self._service = ServiceClient(session, base_url, timeout, "the chain service", registry)

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

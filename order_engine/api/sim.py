"""POST /api/sim/move and /api/sim/launch: the simulated market's controls over HTTP.

Served only with `[sim] controls = true` (demos and tests): whoever reaches them moves the
market every order trades on. They act on the market this process trades on, in process or
the chain service, through the same `MarketControls`. The answer comes once this process's
view of the market has applied the change (`applied`; false only if that took longer than
`APPLY_TIMEOUT_S`, or the stream is down), so an order sent next trades on it here; other
replicas see it when their streams bring it.

Refusals are the API's: `{"error": {"code", "message", "field"}}`, 400 for bad input (the
field named), 409 for a token already launched, 503 when the chain service cannot be
reached.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, TypeVar

from aiohttp import web

from order_engine.api.errors import ApiError, bad_request, json_response
from order_engine.api.validation import check_text, parse_json
from order_engine.market import MarketData
from order_engine.venues.base import VenueError
from order_engine.venues.controls import (
    ControlError,
    MarketControls,
    launch_to_json,
    move_to_json,
)

T = TypeVar("T")

_MOVE_FIELDS = ("tokenA", "tokenB", "bps")
_LAUNCH_FIELDS = ("token", "venue", "liquidityUsd")
# A control's body is a few short fields.
MAX_BODY_BYTES = 4096
# How long an answer waits for this process's view to apply the change.
APPLY_TIMEOUT_S = 5.0


class SimControls:
    def __init__(
        self,
        controls: MarketControls,
        market_data: MarketData | None,
        *,
        body_timeout_s: float,
        apply_timeout_s: float = APPLY_TIMEOUT_S,
    ) -> None:
        self._controls = controls
        self._data = market_data
        self._body_timeout = body_timeout_s
        self._apply_timeout = apply_timeout_s

    async def move(self, request: web.Request) -> web.Response:
        body = await self._body(request, _MOVE_FIELDS)
        token_a, token_b = _text(body, "tokenA"), _text(body, "tokenB")
        bps = _number(body, "bps")
        try:
            move = await self._controls.move_price(token_a, token_b, bps)
        except (ControlError, VenueError) as exc:
            raise _refusal(exc) from None
        applied = await self._applied(move.stream_id, move.seq)
        return json_response({**move_to_json(move), "applied": applied})

    async def launch(self, request: web.Request) -> web.Response:
        body = await self._body(request, _LAUNCH_FIELDS)
        token = _text(body, "token")
        venue = _text(body, "venue") if body.get("venue") is not None else None
        liquidity = _number(body, "liquidityUsd") if body.get("liquidityUsd") is not None else None
        try:
            launch = await self._controls.launch(token, venue, liquidity)
        except (ControlError, VenueError) as exc:
            raise _refusal(exc) from None
        applied = await self._applied(launch.stream_id, launch.seq)
        return json_response({**launch_to_json(launch), "applied": applied}, 201)

    async def _applied(self, stream_id: str, seq: int) -> bool:
        """Whether this process's view has applied the stream up to `seq`, waiting for it."""
        data = self._data
        if data is None:
            return False
        try:
            async with asyncio.timeout(self._apply_timeout):
                # A view on another stream (the chain restarted) must resubscribe first.
                while data.stream_id != stream_id:
                    await data.reached(data.seq + 1)
                await data.reached(seq)
        except TimeoutError:
            return False
        return data.stream_id == stream_id

    async def _body(self, request: web.Request, fields: tuple[str, ...]) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"body exceeds {MAX_BODY_BYTES} bytes")
        try:
            async with asyncio.timeout(self._body_timeout):
                raw = await _read_body(request)
        except TimeoutError:
            raise ApiError(
                408, "request_timeout", "the request body did not arrive in time"
            ) from None
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise bad_request("invalid_json", "body must be a JSON object")
        for name in body:
            if name not in fields:
                raise bad_request(
                    "unknown_field", f"unknown field {name!r} (known: {', '.join(fields)})", name
                )
        return body


def sim_routes(
    controls: MarketControls, market_data: MarketData | None, *, body_timeout_s: float
) -> list[web.RouteDef]:
    handlers = SimControls(controls, market_data, body_timeout_s=body_timeout_s)
    return [
        web.post("/api/sim/move", handlers.move),
        web.post("/api/sim/launch", handlers.launch),
    ]


async def _read_body(request: web.Request) -> bytes:
    """The whole body (it may arrive in pieces), refused past the size limit."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY_BYTES + 1 - size):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, "body_too_large", f"body exceeds {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(exc: ControlError | VenueError) -> ApiError:
    if isinstance(exc, ControlError):
        return ApiError(exc.status, exc.code, exc.message, exc.field)
    return ApiError(
        503, "market_unavailable", f"the market did not answer: {exc.message}", headers=_RETRY
    )


_RETRY = {"Retry-After": "1"}


def _text(body: dict[str, Any], name: str) -> str:
    return check_text(_required(body, name, str, "a string"), name).strip()


def _number(body: dict[str, Any], name: str) -> float:
    # parse_json reads every JSON number as a Decimal, and never NaN or Infinity.
    return float(_required(body, name, Decimal, "a number"))


def _required(body: dict[str, Any], name: str, kind: type[T], what: str) -> T:
    """The field `name`, which must be there and of `kind` (`what`, in the message)."""
    value = body.get(name)
    if value is None:
        raise bad_request("missing_field", f"{name} is required", name)
    if not isinstance(value, kind):
        raise bad_request("invalid_type", f"{name} must be {what}", name)
    return value

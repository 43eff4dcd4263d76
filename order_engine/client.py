"""The Python client: submit an order, cancel one, look one up, and watch one stage by stage.

A watcher reconnects with `after=<last seq>` when the connection drops (or the server
restarts), so it never misses nor repeats an event. `Client.session` opens a trading
session (client_session) for many orders on one WebSocket. The command-line commands built
on it are in client_commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp

from order_engine.client_errors import ClientError, NotCancellable, OrderNotFound
from order_engine.client_session import EventHandler, TradingSession

# The statuses an order ends in.
TERMINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})
SUBMIT_ATTEMPTS = 3
_RETRYABLE_CLOSES = {1001, 1006, 1011, 1012, 1013, None}
_HELD_S = 1.0  # a stream connected this long counts as progress (see Client.watch)


@dataclass
class Progress:
    order_id: str
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    @property
    def status(self) -> str | None:
        return self.events[-1]["status"] if self.events else None


def order_request(
    token_in: str,
    token_out: str,
    amount: str,
    *,
    slippage_bps: int | None = None,
    client_order_id: str | None = None,
    limit_price: str | None = None,
    expires_in: float | None = None,
    expires_at: float | str | None = None,
) -> dict[str, Any]:
    """The body of POST /api/order/execute. A limit price makes it a limit order (armed
    until the best route pays at least `limit_price` tokenOut per tokenIn); `expires_in`
    (seconds) or `expires_at` (epoch seconds or ISO 8601) bound how long it waits. Amounts
    and prices stay the caller's exact decimal text; the server validates every field."""
    order: dict[str, Any] = {"tokenIn": token_in, "tokenOut": token_out, "amount": amount}
    if slippage_bps is not None:
        order["slippageBps"] = slippage_bps
    if client_order_id:
        order["clientOrderId"] = client_order_id
    if limit_price is not None:
        order["orderType"] = "limit"
        order["limitPrice"] = limit_price
    if expires_in is not None:
        order["expiresIn"] = _number(expires_in)
    if expires_at is not None:
        order["expiresAt"] = _number(expires_at) if isinstance(expires_at, float) else expires_at
    return order


def _number(value: float) -> int | float:
    """A whole number of seconds is sent as one (3600, not 3600.0)."""
    return int(value) if value.is_integer() else value


def parse_time(text: str) -> float | str:
    """`--expires-at`: epoch seconds as a number, anything else (ISO 8601) as given."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    seconds = float(number) if number.is_finite() else math.inf
    return seconds if math.isfinite(seconds) else text


class Client:
    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"x-api-key": api_key} if api_key else {}

    async def submit(self, session: aiohttp.ClientSession, order: dict[str, Any]) -> str:
        # The same key on every attempt: a retry after a lost answer returns the order the
        # first attempt placed instead of placing a second one.
        headers = {**self._headers, "Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                async with session.post(
                    f"{self._base}/api/order/execute", json=order, headers=headers
                ) as resp:
                    body = await resp.json(content_type=None)
                break
            except (aiohttp.ClientError, ValueError) as exc:
                if attempt == SUBMIT_ATTEMPTS - 1:
                    raise ClientError(f"cannot reach {self._base}: {exc}") from None
                await asyncio.sleep(0.2 * 2**attempt)  # backing off before trying again
        if resp.status not in (200, 201):
            raise ClientError(_refusal(resp.status, body))
        order_id: str = body["orderId"]
        return order_id

    async def cancel(self, session: aiohttp.ClientSession, order_id: str) -> dict[str, Any]:
        """Cancel a pending or open order: the order, now `cancelled`. Raises NotCancellable
        (its `status` says where the order is) once its execution began or it ended,
        OrderNotFound for an unknown order, ClientError for anything else."""
        url = f"{self._base}/api/order/{order_id}"
        retried = False
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                async with session.delete(url, headers=self._headers) as resp:
                    body = await resp.json(content_type=None)
                break
            except (aiohttp.ClientError, ValueError) as exc:
                if attempt == SUBMIT_ATTEMPTS - 1:
                    raise ClientError(f"cannot reach {self._base}: {exc}") from None
                retried = True
                await asyncio.sleep(0.2 * 2**attempt)  # backing off before trying again
        if resp.status == 200:
            order: dict[str, Any] = body
            return order
        error = body.get("error", {}) if isinstance(body, dict) else {}
        if resp.status == 404:
            raise OrderNotFound(_refusal(resp.status, body))
        if resp.status == 409 and error.get("code") == "not_cancellable":
            status = str(error.get("status", "unknown"))
            if retried and status == "cancelled":
                # An earlier attempt's answer was lost: it is that attempt that cancelled it.
                return await self.order(session, order_id)
            raise NotCancellable(
                f"order {order_id} is {status}: only a pending or open order can be cancelled",
                status,
            )
        raise ClientError(_refusal(resp.status, body))

    async def order(self, session: aiohttp.ClientSession, order_id: str) -> dict[str, Any]:
        """GET /api/order/{id}: the order (without its events)."""
        try:
            async with session.get(
                f"{self._base}/api/order/{order_id}", headers=self._headers
            ) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, ValueError) as exc:
            raise ClientError(f"cannot reach {self._base}: {exc}") from None
        if resp.status == 404:
            raise OrderNotFound(_refusal(resp.status, body))
        if resp.status != 200:
            raise ClientError(_refusal(resp.status, body))
        order: dict[str, Any] = body["order"]
        return order

    @contextlib.asynccontextmanager
    async def session(
        self, http: aiohttp.ClientSession, on_event: EventHandler
    ) -> AsyncIterator[TradingSession]:
        """A trading session: many orders on one WebSocket (see TradingSession)."""
        url = self._base.replace("http", "ws", 1) + "/api/session"
        try:
            ws = await http.ws_connect(url, headers=self._headers, heartbeat=20.0)
        except aiohttp.WSServerHandshakeError as exc:
            raise ClientError(f"refused ({exc.status}): cannot open a trading session") from None
        except aiohttp.ClientError as exc:
            raise ClientError(f"cannot reach {self._base}: {exc}") from None
        trading = TradingSession(ws, on_event)
        try:
            yield trading
        finally:
            await trading.close()

    async def watch(
        self,
        session: aiohttp.ClientSession,
        progress: Progress,
        on_event: Callable[[dict[str, Any]], None],
        *,
        reconnect_for: float = 60.0,
    ) -> None:
        """Until the order ends (confirmed, failed, cancelled or expired); reconnects
        (resuming after the last seq seen) for up to `reconnect_for` seconds without any
        progress. An open order may wait for hours on one quiet connection: when that drops,
        the time counts from the drop, not from the last event."""
        ws_url = self._base.replace("http", "ws", 1) + "/api/order/status"
        deadline = time.monotonic() + reconnect_for
        delay = 0.1
        while True:
            params = {"orderId": progress.order_id, "after": str(progress.last_seq)}
            close_code: int | None = None
            seen = progress.last_seq
            opened: float | None = None
            try:
                async with session.ws_connect(ws_url, params=params, headers=self._headers) as ws:
                    opened = time.monotonic()
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            continue
                        message = msg.json()
                        if "error" in message:
                            raise ClientError(message["error"].get("message", "refused"))
                        if message["seq"] <= progress.last_seq:
                            continue
                        progress.events.append(message)
                        on_event(message)
                    close_code = ws.close_code
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status < 500:
                    raise ClientError(f"refused ({exc.status})") from None
            except aiohttp.ClientError:
                pass  # dropped: reconnect below
            if progress.status in TERMINAL:
                return
            now = time.monotonic()
            # Progress: events arrived, or a connection held (an armed order's stream is
            # quiet for as long as it waits). One refused at once again and again is none.
            if progress.last_seq > seen or (opened is not None and now - opened >= _HELD_S):
                deadline = now + reconnect_for
            if close_code not in _RETRYABLE_CLOSES or now > deadline:
                raise ClientError(f"the stream ended early (close {close_code})")
            await asyncio.sleep(delay)  # backing off before reconnecting to a restarting server
            delay = min(delay * 2, 2.0)


def _refusal(status: int, body: Any) -> str:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return f"refused ({status} {error.get('code', '')}): {error.get('message', body)}"

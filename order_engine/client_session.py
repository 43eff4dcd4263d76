"""The trading session's client (`GET /api/session`): many orders on one WebSocket, each
request answered by its id and every followed order's events delivered in seq order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from order_engine.client_errors import NotCancellable, OrderNotFound, SessionClosed, SessionRefused

EventHandler = Callable[[dict[str, Any]], None]


class TradingSession:
    """One trading session (`GET /api/session`): submit, cancel and watch many orders on one
    WebSocket. Each request is answered by its id; the events of every order submitted or
    watched go to `on_event` in seq order, from seq 1 for a submitted order and after
    `after` for a watched one, until its end. Open one with `Client.session`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, on_event: EventHandler) -> None:
        self._ws = ws
        self._on_event = on_event
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._closed: SessionClosed | None = None
        self._reader = asyncio.create_task(self._read(), name="trading-session-read")

    @property
    def closed(self) -> SessionClosed | None:
        """Why the session ended, once it has."""
        return self._closed

    async def submit(
        self, order: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """As POST /api/order/execute answers: `{orderId, status, message, websocketUrl}`."""
        fields: dict[str, Any] = {"order": order}
        if idempotency_key is not None:
            fields["idempotencyKey"] = idempotency_key
        return await self._request("submit", fields)

    async def cancel(self, order_id: str) -> dict[str, Any]:
        """The order, cancelled. Raises NotCancellable or OrderNotFound as `Client.cancel`."""
        return await self._request("cancel", {"orderId": order_id})

    async def watch(self, order_id: str, after: int = 0) -> dict[str, Any]:
        """Follow an order from after `after`: its events go to `on_event`."""
        return await self._request("watch", {"orderId": order_id, "after": after})

    async def close(self) -> None:
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def wait_closed(self) -> SessionClosed:
        await asyncio.gather(self._reader, return_exceptions=True)
        assert self._closed is not None
        return self._closed

    async def _request(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self._closed is not None:
            raise self._closed
        self._next_id += 1
        request_id = self._next_id
        answer = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        try:
            await self._ws.send_str(json.dumps({"id": request_id, "op": op, **fields}))
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._waiting.pop(request_id, None)
            raise SessionClosed(f"the session dropped: {exc}", None) from None
        reply = await answer
        if "error" not in reply:
            result: dict[str, Any] = reply["result"]
            return result
        error = reply["error"]
        if error.get("code") == "order_not_found":
            raise OrderNotFound(error.get("message", "no such order"))
        if error.get("code") == "not_cancellable":
            status = str(error.get("status", "unknown"))
            raise NotCancellable(error.get("message", "not cancellable"), status)
        raise SessionRefused(error)

    async def _read(self) -> None:
        last_word = ""
        try:
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                if "event" in frame:
                    self._on_event(frame["event"])
                elif "id" in frame:
                    answer = self._waiting.pop(frame["id"], None)
                    if answer is not None and not answer.done():
                        answer.set_result(frame)
                elif "error" in frame:  # the server's last word before it closes
                    last_word = f": {frame['error'].get('message', '')}"
        except aiohttp.ClientError:
            pass
        finally:
            code = self._ws.close_code
            self._closed = SessionClosed(f"the session closed ({code}){last_word}", code)
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(self._closed)
            self._waiting.clear()

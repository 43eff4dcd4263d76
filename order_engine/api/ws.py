"""WebSocket streaming of an order's events: history first, then live, gap-free.

The handler subscribes to the hub BEFORE it reads the store. Every event is committed before
it is published, so any event is either in what the store returned or arrives through the
subscription (or both: duplicates are dropped by `seq`). A gap in seq, an overflowing inbox
or a hub outage sends the handler back to the store for what it missed. No sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from order_engine.api.auth import CLIENT, SUBPROTOCOL
from order_engine.api.errors import ApiError
from order_engine.api.history import parse_history_query
from order_engine.api.http import OrderSubmitter, accepted_json, store_refusal
from order_engine.api.order_parser import OrderParser
from order_engine.api.ratelimit import client_key
from order_engine.api.sockets import (
    CLOSE_TRY_AGAIN,
    Connections,
    SlowConsumer,
    abort_connection,
    check_handshake,
    close_socket,
)
from order_engine.api.validation import parse_after, parse_json, parse_order_id
from order_engine.api.ws_send import send_text, write_burst
from order_engine.hub import Hub
from order_engine.hub.base import Subscription
from order_engine.orders import OrderEvent, Status
from order_engine.store import Store, StoreConflict, StoreError, StoreUnavailable
from order_engine.venues.tokens import REGISTRY, TokenRegistry

log = logging.getLogger("order_engine.ws")

CLOSE_UNKNOWN_ORDER = 4404
CLOSE_POLICY = WSCloseCode.POLICY_VIOLATION  # 1008: malformed request

LAGGED = {
    "warning": {
        "code": "lagged",
        "message": "some events were dropped for this slow stream; GET /api/orders has them",
    }
}


@dataclass(frozen=True, slots=True)
class _FirehoseFilter:
    statuses: frozenset[Status]
    token_in: str | None
    token_out: str | None
    client: str | None

    @property
    def needs_order(self) -> bool:
        return bool(self.token_in or self.token_out or self.client)

    def matches(self, facts: tuple[str, str, str | None] | None) -> bool:
        if facts is None:
            return False
        token_in, token_out, client = facts
        return (
            (self.token_in is None or token_in == self.token_in)
            and (self.token_out is None or token_out == self.token_out)
            and (self.client is None or client == self.client)
        )


def _unknown(order_id: str) -> _Refused:
    return _Refused(
        ApiError(404, "order_not_found", f"no order {order_id}", "orderId"), CLOSE_UNKNOWN_ORDER
    )


class OrderStreams:
    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        parser: OrderParser,
        submitter: OrderSubmitter,
        connections: Connections,
        heartbeat: float,
        send_timeout: float,
        first_message_timeout: float,
        max_message_bytes: int,
        proxy_hops: int = 0,
        registry: TokenRegistry = REGISTRY,
    ) -> None:
        self._proxy_hops = proxy_hops
        self._registry = registry
        self._facts: dict[str, tuple[str, str, str | None]] = {}
        self._store = store
        self._hub = hub
        self._parser = parser
        self._submitter = submitter
        self._connections = connections
        self._heartbeat = heartbeat
        self._send_timeout = send_timeout
        self._first_message_timeout = first_message_timeout
        self._max_message = max_message_bytes

    # -- handlers -----------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.StreamResponse:
        """GET /api/order/status?orderId=&after= upgraded: the order's events, then close."""
        ws = await self.open(request)
        try:
            try:
                order_id = parse_order_id(request.query.get("orderId"))
                after = parse_after(request.query.get("after"))
            except ApiError as exc:
                await self.refuse(ws, request, exc, CLOSE_POLICY)
                return ws
            await self._serve(ws, request, order_id, after, request.get(CLIENT))
        finally:
            self._connections.discard(ws)
        return ws

    async def execute(self, request: web.Request) -> web.StreamResponse:
        """GET /api/orders/execute upgraded: the first message is the order; the reply is
        `{orderId, status, message, websocketUrl}`, then the order's whole stream on this
        connection. With `?orderId=` (a client reconnecting where it submitted), the order's
        status stream instead, exactly as /api/order/status serves it."""
        if "orderId" in request.query:
            return await self.status(request)
        ws = await self.open(request)
        try:
            try:
                async with asyncio.timeout(self._first_message_timeout):
                    msg = await ws.receive()
            except TimeoutError:
                await self.refuse(
                    ws,
                    request,
                    ApiError(400, "timeout", "no order received in time"),
                    CLOSE_POLICY,
                )
                return ws
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return ws  # closed before sending anything
            try:
                body = parse_json(msg.data)
                client = request.get(CLIENT)
                try:
                    order, _ = await self._submitter.submit(
                        self._parser.parse(body, client_id=client)
                    )
                except (StoreUnavailable, StoreConflict) as exc:
                    raise store_refusal(exc) from None
            except ApiError as exc:
                close = CLOSE_TRY_AGAIN if exc.status == 503 else CLOSE_POLICY
                await self.refuse(ws, request, exc, close)
                return ws
            await self.send(
                ws, accepted_json(order, "Order submitted successfully."), request.transport
            )
            await self._serve(ws, request, order.order_id, 0, client)
        finally:
            self._connections.discard(ws)
        return ws

    async def firehose(self, request: web.Request) -> web.StreamResponse:
        """GET /api/orders/stream upgraded: every event of every order as it happens,
        optionally only some statuses (`status=a,b`) or a pair (`tokenIn`, `tokenOut`).
        A client too slow for the stream gets a `lagged` warning for what it missed (the
        history API has it) or, if it stops reading, is disconnected."""
        try:
            wanted = self._firehose_filter(request)
        except ApiError as exc:
            ws = await self.open(request)
            await self.refuse(ws, request, exc, CLOSE_POLICY)
            self._connections.discard(ws)
            return ws
        # Subscribed before the handshake completes: nothing published after the client
        # sees the connection open is missed.
        async with self._hub.subscribe_all() as sub:
            ws = await self.open(request)
            try:
                reader = asyncio.create_task(self.drain_incoming(ws), name="firehose-read")
                pump = asyncio.create_task(
                    self._pump(ws, request.transport, sub, wanted), name="firehose"
                )
                await asyncio.wait({reader, pump}, return_when=asyncio.FIRST_COMPLETED)
                for task in (reader, pump):
                    task.cancel()
                await asyncio.gather(reader, pump, return_exceptions=True)
                error = None if pump.cancelled() else pump.exception()
                if isinstance(error, SlowConsumer):
                    log.info("closing a firehose that does not read")
                    abort_connection(request)
                elif isinstance(error, StoreError):
                    unavailable = ApiError(503, "store_unavailable", "storage is unavailable")
                    await self.refuse(ws, request, unavailable, CLOSE_TRY_AGAIN)
                elif error is not None and not ws.closed:
                    log.error("firehose failed", exc_info=error)
                    await close_socket(ws, request, WSCloseCode.INTERNAL_ERROR, b"internal error")
            finally:
                self._connections.discard(ws)
        return ws

    def _firehose_filter(self, request: web.Request) -> _FirehoseFilter:
        params = dict(request.query)
        params.pop("apiKey", None)
        query = parse_history_query(params, self._registry, request.get(CLIENT))
        if query.created_from or query.created_to or query.before or "limit" in params:
            raise ApiError(400, "unknown_parameter", "the stream takes status, tokenIn, tokenOut")
        return _FirehoseFilter(
            frozenset(query.statuses), query.token_in, query.token_out, query.client_id
        )

    async def _pump(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        sub: Subscription,
        f: _FirehoseFilter,
    ) -> None:
        while True:
            event = await sub.next()
            if event is None:
                await self.send(ws, LAGGED, transport)
                continue
            if f.statuses and event.status not in f.statuses:
                continue
            if f.needs_order and not f.matches(await self._order_facts(event.order_id)):
                continue
            await self.send(ws, event.to_message(), transport)

    async def _order_facts(self, order_id: str) -> tuple[str, str, str | None] | None:
        """(tokenIn, tokenOut, client) of an order, remembered: it never changes."""
        facts = self._facts.get(order_id)
        if facts is None:
            order = await self._store.get(order_id)
            if order is None:
                return None
            facts = (order.token_in, order.token_out, order.client_id)
            self._facts[order_id] = facts
            if len(self._facts) > 10_000:
                self._facts.pop(next(iter(self._facts)))
        return facts

    # -- streaming ----------------------------------------------------------------------

    async def open(self, request: web.Request) -> web.WebSocketResponse:
        client = client_key(request, self._proxy_hops)
        self._connections.admit(client)
        ws = web.WebSocketResponse(
            heartbeat=self._heartbeat,
            max_msg_size=self._max_message,
            autoping=True,
            protocols=(SUBPROTOCOL,),  # never the key's: the answer names what it picked
        )
        try:
            check_handshake(ws, request)
            await ws.prepare(request)
        except BaseException:
            self._connections.release(client)
            raise
        self._connections.add(ws, client, request)
        return ws

    async def _serve(
        self,
        ws: web.WebSocketResponse,
        request: web.BaseRequest,
        order_id: str,
        after: int,
        client: str | None,
    ) -> None:
        """Stream until the terminal event is sent or the client goes away."""
        reader = asyncio.create_task(self.drain_incoming(ws), name=f"ws-read-{order_id}")
        streamer = asyncio.create_task(
            self._stream(ws, request.transport, order_id, after, client), name=f"ws-{order_id}"
        )
        try:
            await asyncio.wait({reader, streamer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, streamer):
                task.cancel()
            # Outcomes are read below; gathering only waits for both to be done.
            await asyncio.gather(reader, streamer, return_exceptions=True)
        if streamer.cancelled() or ws.closed:
            return
        error = streamer.exception()
        if error is None:
            await close_socket(ws, request, WSCloseCode.OK, b"order finished")
        elif isinstance(error, _Refused):
            await self.refuse(ws, request, error.api_error, error.close_code)
        elif isinstance(error, SlowConsumer):
            log.info("[%s] closing a WebSocket that does not read", order_id)
            abort_connection(request)
        elif isinstance(error, StoreError):
            unavailable = ApiError(503, "store_unavailable", "storage is unavailable")
            await self.refuse(ws, request, unavailable, CLOSE_TRY_AGAIN)
        else:
            log.error("[%s] stream failed", order_id, exc_info=error)
            await close_socket(ws, request, WSCloseCode.INTERNAL_ERROR, b"internal error")

    async def _stream(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        order_id: str,
        after: int,
        client: str | None,
    ) -> None:
        async with self._hub.subscribe(order_id) as sub:
            order = None
            if client is not None:
                # Another client's order is unknown to this one: ids cannot be probed.
                order = await self._store.get(order_id)
                if order is None or order.client_id != client:
                    raise _unknown(order_id)
            # Most watchers connect right after submitting: the hub may know it all.
            history = self._hub.recent(order_id, after) or await self._store.events(order_id, after)
            if not history:
                order = order or await self._store.get(order_id)
                if order is None:
                    raise _unknown(order_id)
                if order.last_seq < after:
                    # No client saw this seq (events are stored before anyone sees them):
                    # waiting for it would wait forever, past the terminal event too.
                    raise _Refused(
                        ApiError(
                            400,
                            "invalid_after",
                            f"after={after} is beyond the order's last event (seq "
                            f"{order.last_seq})",
                            "after",
                        ),
                        CLOSE_POLICY,
                    )
                if order.terminal:
                    return  # resumed after the end: nothing more will come
            last = await self._send_events(ws, transport, history, after)
            if history and history[-1].terminal:
                return
            sub.position = last
            while True:
                incoming = await sub.next()
                if incoming is not None and incoming.seq <= last:
                    continue  # already sent from the store
                if incoming is None or incoming.seq > last + 1:
                    # Lagged or a gap: the store has everything committed, in order.
                    catch_up = await self._store.events(order_id, last)
                else:
                    catch_up = [incoming]
                last = await self._send_events(ws, transport, catch_up, last)
                if catch_up and catch_up[-1].terminal:
                    return
                sub.position = last

    async def _send_events(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        events: list[OrderEvent],
        last: int,
    ) -> int:
        """Send `events` (in seq order, none after a terminal one: the store and the hub
        keep none) in one write where they can go together (a watcher connecting late gets
        its history at once); the seq of the last one sent (`last` if none)."""
        if not events:
            return last
        texts = [orjson.dumps(event.to_message()).decode() for event in events]
        if len(texts) == 1 or not write_burst(ws, transport, texts):
            for text in texts:
                await send_text(ws, text, self._send_timeout, transport)
        return events[-1].seq

    async def send(
        self,
        ws: web.WebSocketResponse,
        message: dict[str, Any],
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        """`transport`, the connection's (when the caller has it), spares a timer for a
        message that cannot wait."""
        await send_text(ws, orjson.dumps(message).decode(), self._send_timeout, transport)

    @staticmethod
    async def drain_incoming(ws: web.WebSocketResponse) -> None:
        """Reading is what processes pongs and the client's close; the messages a watcher
        sends carry no meaning and are dropped."""
        async for _ in ws:
            pass

    async def refuse(
        self, ws: web.WebSocketResponse, request: web.BaseRequest, error: ApiError, code: int
    ) -> None:
        with contextlib.suppress(ConnectionError, SlowConsumer):
            await self.send(ws, error.body())
        await close_socket(ws, request, code, error.code.encode()[:120])


class _Refused(Exception):
    def __init__(self, api_error: ApiError, close_code: int) -> None:
        super().__init__(api_error.message)
        self.api_error = api_error
        self.close_code = close_code

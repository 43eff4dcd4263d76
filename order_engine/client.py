"""The command-line client: submit an order, watch one stage by stage, or cancel one.

It reconnects with `after=<last seq>` when the connection drops (or the server restarts),
so a watcher never misses nor repeats an event. Exit status of `submit` and `watch`: the
order's end (0 confirmed, 1 failed, 3 cancelled, 4 expired) or 2 when it could not be
submitted or watched. Of `cancel`: 0 cancelled, 1 not cancellable (its execution began or it
ended: the status is printed), 2 no such order or another error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

EXIT_CONFIRMED, EXIT_FAILED, EXIT_ERROR, EXIT_CANCELLED, EXIT_EXPIRED = 0, 1, 2, 3, 4
# `cancel`: the order was cancelled; it could not be (its status says why); or an error.
EXIT_OK, EXIT_NOT_CANCELLABLE = 0, 1
# How a watched order's end is told to the shell.
EXIT_BY_STATUS = {
    "confirmed": EXIT_CONFIRMED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "expired": EXIT_EXPIRED,
}
TERMINAL = frozenset(EXIT_BY_STATUS)
SUBMIT_ATTEMPTS = 3
_RETRYABLE_CLOSES = {1001, 1006, 1011, 1012, 1013, None}
_HELD_S = 1.0  # a stream connected this long counts as progress (see Client.watch)
_STYLES = {"confirmed": "green", "failed": "red", "cancelled": "yellow", "expired": "yellow"}


class ClientError(Exception):
    """The server refused, or cannot be reached: the message says which and why."""


class OrderNotFound(ClientError):
    """No such order (or, with authentication on, another client's)."""


class NotCancellable(ClientError):
    """The order's execution began, or it ended: it can no longer be cancelled."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


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


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def details(event: dict[str, Any]) -> str:
    """The event's message, with what matters at that stage."""
    data = event.get("data") or {}
    extra = ""
    status = event["status"]
    if status == "open":
        parts = []
        if data.get("limitPrice") is not None:
            parts.append(f"limit {data['limitPrice']}")
        if "expiresAt" in data:
            parts.append(f"expires {_when(data['expiresAt'])}")
        if rearmed := data.get("rearmed"):
            parts.append(f"armed again after {rearmed.get('code', '')}")
        extra = f" [{'; '.join(parts)}]" if parts else ""
    elif status == "routing" and (trigger := data.get("trigger")):
        extra = f" [trigger slot {trigger.get('slot')} at price {trigger.get('price')}]"
    elif status == "building" and "quotes" in data:
        quotes = ", ".join(f"{q['dex']} {q['amountOut']}" for q in data["quotes"])
        extra = f" [{quotes}; {data.get('reason', '')}]"
    elif status == "submitted":
        extra = f" [tx {data.get('txHash', '')}]"
    elif status == "confirmed":
        extra = f" [price {data.get('executedPrice')}]"
    elif status == "failed":
        error = data.get("error") or {}
        extra = f" [{error.get('code', '')}]"
    elif status == "cancelled" and data.get("previous"):
        extra = f" [was {data['previous']}]"
    elif status == "expired" and "expiresAt" in data:
        extra = f" [at {_when(data['expiresAt'])}]"
    return f"{event['message']}{extra}"


def describe(event: dict[str, Any]) -> str:
    """One plain line per event."""
    return f"{event['seq']:>2} {event['status']:<9} {details(event)}"


def describe_order(order: dict[str, Any]) -> list[str]:
    """An order (as GET /api/order/{id} and DELETE answer it), one `name: value` per line."""
    lines = [
        f"order      {order['orderId']}",
        f"status     {order['status']}",
        f"type       {order.get('orderType', 'market')}",
        f"swap       {order['amount']} {order['tokenIn']} -> {order['tokenOut']}",
    ]
    if order.get("limitPrice") is not None:
        lines.append(f"limit      {order['limitPrice']} {order['tokenOut']} per {order['tokenIn']}")
    if order.get("expiresAt") is not None:
        lines.append(f"expires    {_when(order['expiresAt'])}")
    lines.append(f"created    {_when(order.get('createdAt'))}")
    lines.append(f"updated    {_when(order.get('updatedAt'))}")
    return lines


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


class SessionRefused(ClientError):
    """A trading session's request refused: the server's `code`, and `retry_after` (seconds)
    when asking again later may succeed (rate limited, queue full)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"refused ({error.get('code', '')}): {error.get('message', '')}")
        self.code = str(error.get("code", ""))
        retry_after = error.get("retryAfter")
        self.retry_after = float(retry_after) if isinstance(retry_after, int | float) else None


class SessionClosed(ClientError):
    """The trading session ended (the server closed it, or the connection dropped): what
    was in flight may be asked again on a new one (watch with `after`; submit again with
    the same idempotency key)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


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


def _refusal(status: int, body: Any) -> str:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return f"refused ({status} {error.get('code', '')}): {error.get('message', body)}"


async def run(
    base_url: str,
    api_key: str | None,
    order: dict[str, Any] | None = None,
    order_id: str | None = None,
    console: Console | None = None,
) -> int:
    """Submit `order` (or take `order_id`) and show its stages until it ends: the exit
    status says how (EXIT_BY_STATUS), EXIT_ERROR if it could not be submitted or watched."""
    console = console or Console()
    client = Client(base_url, api_key)
    try:
        async with aiohttp.ClientSession() as session:
            if order is not None:
                order_id = await client.submit(session, order)
            assert order_id is not None
            progress = Progress(order_id)
            if console.is_terminal:
                await _watch_live(client, session, progress, console)
            else:
                print(f"order {order_id}", flush=True)
                await client.watch(session, progress, lambda e: print(describe(e), flush=True))
    except ClientError as exc:
        print(f"order-engine: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_BY_STATUS.get(progress.status or "", EXIT_ERROR)


@dataclass(slots=True)
class _Tracked:
    """One order of a batch: its idempotency key (a resubmit after a drop is a replay, never
    a second order), its id once known, the last event seen and why it was refused, if so."""

    key: str
    order_id: str | None = None
    last_seq: int = 0
    status: str | None = None
    refused: str | None = None


class _Batch:
    """`count` copies of one order over one trading session, each followed to its end; on a
    dropped session, a new one watches each known order after its last seq and submits the
    rest again under the same keys."""

    def __init__(self, order: dict[str, Any], count: int, window: int) -> None:
        run = uuid.uuid4().hex[:12]
        self.order = order
        self.orders = [_Tracked(f"cli-{run}-{k}") for k in range(count)]
        self.window = window
        self._by_id: dict[str, _Tracked] = {}
        # Events that came before the submit's answer reached its coroutine.
        self._early: dict[str, list[dict[str, Any]]] = {}
        self._left = count
        self.done = asyncio.Event()
        self.last_end: float | None = None
        self.progressed = False  # since the last session began: an event or an answer

    def on_event(self, event: dict[str, Any]) -> None:
        tracked = self._by_id.get(event["orderId"])
        if tracked is None:
            self._early.setdefault(event["orderId"], []).append(event)
            return
        if event["seq"] <= tracked.last_seq:
            return  # seen already (a replayed submit streams from seq 1)
        self.progressed = True
        tracked.last_seq, tracked.status = event["seq"], event["status"]
        if tracked.status in TERMINAL:
            self.last_end = time.monotonic()
            self._ended()

    def _ended(self) -> None:
        self._left -= 1
        if not self._left:
            self.done.set()

    def _took(self, tracked: _Tracked, order_id: str) -> None:
        self.progressed = True
        tracked.order_id = order_id
        self._by_id[order_id] = tracked
        for event in self._early.pop(order_id, []):
            self.on_event(event)

    async def drive(self, trading: TradingSession) -> None:
        """Until every order ended or was refused; raises SessionClosed if the session
        ends first."""
        gate = asyncio.Semaphore(self.window)
        work = [
            self._resume(trading, t) if t.order_id else self._submit(trading, t, gate)
            for t in self.orders
            if t.status not in TERMINAL and t.refused is None
        ]
        tasks = [asyncio.create_task(w) for w in work]
        ended = asyncio.create_task(self.done.wait())
        closed = asyncio.create_task(trading.wait_closed())
        try:
            await asyncio.wait([ended, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*tasks, ended, closed):
                task.cancel()
            await asyncio.gather(*tasks, ended, closed, return_exceptions=True)
        if not self.done.is_set():
            raise await trading.wait_closed()

    async def _submit(
        self, trading: TradingSession, tracked: _Tracked, gate: asyncio.Semaphore
    ) -> None:
        async with gate:
            while True:
                try:
                    accepted = await trading.submit(self.order, tracked.key)
                except SessionRefused as exc:
                    if exc.retry_after is None:
                        tracked.refused = str(exc)
                        self._ended()
                        return
                    await asyncio.sleep(exc.retry_after)  # when the server said to ask again
                    continue
                self._took(tracked, accepted["orderId"])
                return

    async def _resume(self, trading: TradingSession, tracked: _Tracked) -> None:
        assert tracked.order_id is not None
        while True:
            try:
                await trading.watch(tracked.order_id, tracked.last_seq)
                return
            except SessionRefused as exc:
                if exc.retry_after is None:
                    raise
                await asyncio.sleep(exc.retry_after)

    def counts(self) -> Counter[str]:
        """Orders by their last status (`refused`: never taken)."""
        return Counter("refused" if t.refused else t.status or "unanswered" for t in self.orders)

    def refusal(self) -> str | None:
        return next((t.refused for t in self.orders if t.refused), None)


async def run_many(
    base_url: str,
    api_key: str | None,
    order: dict[str, Any],
    count: int,
    *,
    window: int = 256,
    reconnect_for: float = 60.0,
) -> int:
    """Submit `count` copies of `order` over one trading session, follow each to its end,
    and print a summary. Exit status: 0 every order confirmed, 1 some failed, were cancelled
    or expired, 2 some could not be submitted (or the session could not be kept)."""
    client = Client(base_url, api_key)
    batch = _Batch(order, count, window)
    print(f"submitting {count} orders over one trading session", flush=True)
    start = time.monotonic()
    deadline = start + reconnect_for
    delay = 0.1
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                batch.progressed = False
                try:
                    async with client.session(http, batch.on_event) as trading:
                        await batch.drive(trading)
                    break
                except SessionClosed as exc:
                    reason: ClientError = exc
                except ClientError as exc:  # could not open one
                    reason = exc
                now = time.monotonic()
                if batch.progressed:
                    deadline = now + reconnect_for
                if now > deadline:
                    raise reason
                await asyncio.sleep(delay)  # backing off before opening another session
                delay = min(delay * 2, 2.0)
    except ClientError as exc:
        print(f"order-engine: {exc}", file=sys.stderr)
        _print_summary(batch, start)
        return EXIT_ERROR
    _print_summary(batch, start)
    counts = batch.counts()
    if counts["refused"]:
        print(f"order-engine: {batch.refusal()}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_CONFIRMED if counts["confirmed"] == count else EXIT_FAILED


def _print_summary(batch: _Batch, start: float) -> None:
    counts = batch.counts()
    took = (batch.last_end or time.monotonic()) - start
    ended = sum(counts[s] for s in TERMINAL)
    rate = ended / took if took > 0 else 0.0
    lines = [
        f"completed  {counts['confirmed']} confirmed",
        f"failed     {counts['failed']}",
    ]
    lines += [f"{s:<10} {counts[s]}" for s in ("cancelled", "expired", "refused") if counts[s]]
    unfinished = len(batch.orders) - ended - counts["refused"]
    if unfinished:
        lines.append(f"unfinished {unfinished}")
    lines.append(f"took       {took:.2f} s: {rate:.1f} orders/s")
    print("\n".join(lines), flush=True)


async def run_cancel(
    base_url: str, api_key: str | None, order_id: str, *, as_json: bool = False
) -> int:
    """Cancel an order and print it: 0 cancelled, 1 not cancellable (its id and status are
    printed), 2 not found or any other error."""
    client = Client(base_url, api_key)
    try:
        async with aiohttp.ClientSession() as session:
            order = await client.cancel(session, order_id)
    except NotCancellable as exc:
        # What the order is now, on stdout as a cancelled one would be; why, on stderr.
        if as_json:
            print(json.dumps({"orderId": order_id, "status": exc.status}), flush=True)
        else:
            print(f"order      {order_id}\nstatus     {exc.status}", flush=True)
        print(f"order-engine: {exc}", file=sys.stderr)
        return EXIT_NOT_CANCELLABLE
    except ClientError as exc:
        print(f"order-engine: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if as_json:
        print(json.dumps(order, indent=2), flush=True)
    else:
        print("\n".join(describe_order(order)), flush=True)
    return EXIT_OK


async def _watch_live(
    client: Client, session: aiohttp.ClientSession, progress: Progress, console: Console
) -> None:
    """A table of the stages that fills in as events arrive (a terminal only)."""

    def table() -> Table:
        t = Table(title=f"order {progress.order_id}", expand=False)
        t.add_column("seq", justify="right")
        t.add_column("stage")
        t.add_column("details")
        for event in progress.events:
            style = _STYLES.get(event["status"], "")
            t.add_row(str(event["seq"]), event["status"], details(event), style=style)
        if progress.status not in TERMINAL:
            waiting = "armed: waiting for its trigger" if progress.status == "open" else "waiting"
            t.add_row("", "…", waiting, style="dim")
        return t

    with Live(table(), console=console, refresh_per_second=8) as live:
        await client.watch(session, progress, lambda _: live.update(table()))

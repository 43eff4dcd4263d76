"""The command-line client: submit an order or watch one, stage by stage.

It reconnects with `after=<last seq>` when the connection drops (or the server restarts),
so a watcher never misses nor repeats an event. Exit status: 0 confirmed, 1 failed, 2 the
order could not be submitted or watched.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

EXIT_CONFIRMED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
SUBMIT_ATTEMPTS = 3
_RETRYABLE_CLOSES = {1001, 1006, 1011, 1012, 1013, None}


class ClientError(Exception):
    """The server refused, or cannot be reached: the message says which and why."""


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


def details(event: dict[str, Any]) -> str:
    """The event's message, with what matters at that stage."""
    data = event.get("data") or {}
    extra = ""
    if event["status"] == "building" and "quotes" in data:
        quotes = ", ".join(f"{q['dex']} {q['amountOut']}" for q in data["quotes"])
        extra = f" [{quotes}; {data.get('reason', '')}]"
    elif event["status"] == "submitted":
        extra = f" [tx {data.get('txHash', '')}]"
    elif event["status"] == "confirmed":
        extra = f" [price {data.get('executedPrice')}]"
    elif event["status"] == "failed":
        error = data.get("error") or {}
        extra = f" [{error.get('code', '')}]"
    return f"{event['message']}{extra}"


def describe(event: dict[str, Any]) -> str:
    """One plain line per event."""
    return f"{event['seq']:>2} {event['status']:<9} {details(event)}"


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
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise ClientError(
                f"refused ({resp.status} {error.get('code', '')}): {error.get('message', body)}"
            )
        order_id: str = body["orderId"]
        return order_id

    async def watch(
        self,
        session: aiohttp.ClientSession,
        progress: Progress,
        on_event: Callable[[dict[str, Any]], None],
        *,
        reconnect_for: float = 60.0,
    ) -> None:
        """Until the order is confirmed or failed; reconnects (resuming after the last
        seq seen) for up to `reconnect_for` seconds without any progress."""
        ws_url = self._base.replace("http", "ws", 1) + "/api/order/status"
        deadline = time.monotonic() + reconnect_for
        delay = 0.1
        while True:
            params = {"orderId": progress.order_id, "after": str(progress.last_seq)}
            close_code: int | None = None
            try:
                async with session.ws_connect(ws_url, params=params, headers=self._headers) as ws:
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
                        deadline = time.monotonic() + reconnect_for
                    close_code = ws.close_code
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status < 500:
                    raise ClientError(f"refused ({exc.status})") from None
            except aiohttp.ClientError:
                pass  # dropped: reconnect below
            if progress.status in ("confirmed", "failed"):
                return
            if close_code not in _RETRYABLE_CLOSES or time.monotonic() > deadline:
                raise ClientError(f"the stream ended early (close {close_code})")
            await asyncio.sleep(delay)  # backing off before reconnecting to a restarting server
            delay = min(delay * 2, 2.0)


async def run(
    base_url: str,
    api_key: str | None,
    order: dict[str, Any] | None = None,
    order_id: str | None = None,
    console: Console | None = None,
) -> int:
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
    return EXIT_CONFIRMED if progress.status == "confirmed" else EXIT_FAILED


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
            style = {"confirmed": "green", "failed": "red"}.get(event["status"], "")
            t.add_row(str(event["seq"]), event["status"], details(event), style=style)
        if progress.status not in ("confirmed", "failed"):
            t.add_row("", "…", "waiting", style="dim")
        return t

    with Live(table(), console=console, refresh_per_second=8) as live:
        await client.watch(session, progress, lambda _: live.update(table()))

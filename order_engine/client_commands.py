"""The command-line client's commands: submit an order and watch it stage by stage, submit
many over one trading session, or cancel one.

Exit status of `submit` and `watch`: the order's end (0 confirmed, 1 failed, 3 cancelled,
4 expired) or 2 when it could not be submitted or watched. Of `submit --count N`: 0 every
order confirmed, 1 some did not, 2 some could not be submitted. Of `cancel`: 0 cancelled,
1 not cancellable (its execution began or it ended: the status is printed), 2 no such order
or another error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from rich.console import Console

from order_engine.client import TERMINAL, Client, Progress
from order_engine.client_errors import ClientError, NotCancellable, SessionClosed, SessionRefused
from order_engine.client_output import describe, describe_order, watch_live
from order_engine.client_session import TradingSession

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
                await watch_live(client, session, progress, console)
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

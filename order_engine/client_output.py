"""How the command-line client shows orders and events: one plain line per event, an order
as `name: value` lines, and on a terminal a table of stages that fills in live."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import aiohttp
from rich.console import Console
from rich.live import Live
from rich.table import Table

from order_engine.client import TERMINAL, Client, Progress

_STYLES = {"confirmed": "green", "failed": "red", "cancelled": "yellow", "expired": "yellow"}


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


async def watch_live(
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

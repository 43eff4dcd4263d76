"""In-process hub: the embedded default, one process, no broker.

Every event of the process passes through `publish`, so the hub also remembers the events of
the most recent orders: a watcher that connects right after submitting (most do) is served
its history from memory instead of a store read.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from order_engine.hub.base import LocalFanout, RecentEvents, Subscription
from order_engine.orders import OrderEvent

# Orders whose events are remembered: those of the last few seconds at the most this
# process completes (~700/s), where watchers connect within a second of their POST. An
# order's five events hold about 3.6 KiB: some 7 MiB in all.
RECENT_ORDERS = 2048


class MemoryHub:
    def __init__(self, inbox_size: int = 64, recent_orders: int = RECENT_ORDERS) -> None:
        self._fanout = LocalFanout(inbox_size)
        self._recent = RecentEvents(recent_orders)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def subscribe(self, order_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._fanout.subscribe(order_id)

    def subscribe_all(self) -> AbstractAsyncContextManager[Subscription]:
        return self._fanout.subscribe_all()

    def recent(self, order_id: str, after: int) -> list[OrderEvent] | None:
        return self._recent.after(order_id, after)

    async def publish(self, event: OrderEvent) -> None:
        self._recent.add(event)
        self._fanout.dispatch(event)

    @property
    def watcher_count(self) -> int:
        return self._fanout.watcher_count

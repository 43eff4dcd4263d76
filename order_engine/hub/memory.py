"""In-process hub: the embedded default, one process, no broker."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from order_engine.hub.base import LocalFanout, Subscription
from order_engine.orders import OrderEvent


class MemoryHub:
    def __init__(self, inbox_size: int = 64) -> None:
        self._fanout = LocalFanout(inbox_size)

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

    async def publish(self, event: OrderEvent) -> None:
        self._fanout.dispatch(event)

    @property
    def watcher_count(self) -> int:
        return self._fanout.watcher_count

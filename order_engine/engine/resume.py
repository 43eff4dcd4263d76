"""The one error path of work on an order: a write failed, was fenced off, or a bug struck.

Whatever the engine believed about the order may be wrong now (a write reported as failed
may have committed; another replica may own it), so nothing is repaired in place: the order
is read back from the store, the truth, and taken on again from its stored status, unless
it is finished or no longer this replica's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from order_engine.config import EngineSettings
from order_engine.orders import Order
from order_engine.store import Store, StoreError

from .errors import OrderLost
from .outage import WriteOutage
from .recorder import Recorder
from .retries import RETRIES
from .run import OrderRun
from .supervision import ErrorHandler, Supervisor

log = logging.getLogger("order_engine.engine")


class Resumer:
    def __init__(
        self,
        *,
        store: Store,
        recorder: Recorder,
        supervisor: Supervisor,
        settings: EngineSettings,
        outage: WriteOutage,
        adopt: Callable[[Order], None],
        finished: Callable[[str], None],
    ) -> None:
        """`adopt` takes on an order from its stored status; `finished` lets go of one
        that is finished or no longer this replica's."""
        self._store = store
        self._recorder = recorder
        self._supervisor = supervisor
        self._settings = settings
        self._outage = outage
        self._adopt = adopt
        self._finished = finished

    def on_error(self, run: OrderRun) -> ErrorHandler:
        """The handler for an error of work on `run`: read it back (waiting out an outage)
        and go on from there."""

        def resume(exc: Exception) -> None:
            order_id = run.order_id
            delay = self._settings.retry_base_ms / 1000
            if isinstance(exc, StoreError):  # logged once per outage, not per order
                delay = self._outage.failed(exc)
                log.debug("[%s] %s; resuming from the stored state", order_id, exc)
            elif isinstance(exc, OrderLost):
                log.warning("[%s] %s; resuming from the stored state", order_id, exc)
            else:  # one bad order must not take a worker down, nor stay stuck
                log.error("[%s] unexpected error; resuming", order_id, exc_info=exc)
            reload = self._reload(order_id, run.order.last_seq, delay)
            self._supervisor.spawn(RETRIES, reload, f"reload-{order_id}")

        return resume

    async def _reload(self, order_id: str, known_seq: int, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)
            try:
                order = await self._store.get(order_id)
                # A write reported as failed may have committed all the same: publish what
                # is stored beyond what this engine knew, or its watchers would wait for it.
                unseen = await self._store.events(order_id, known_seq) if order else []
                break
            except StoreError:
                delay = min(delay * 2, self._settings.retry_max_ms / 1000)
        await self._recorder.publish(unseen)
        if order is None or order.terminal or order.owner != self._store.owner:
            self._finished(order_id)
            return
        self._adopt(order)

"""The one path of every status change: checked, committed, applied, then published.

An event reaches the store before anyone sees it, so a watcher never sees a stage that a
crash could take back. The store's seq check fences the write: a replica that lost the
order (its lease taken over) learns it here, as `OrderLost`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram

from order_engine.hub import Hub
from order_engine.metrics import Metrics
from order_engine.orders import (
    TERMINAL,
    Order,
    OrderEvent,
    OrderUpdate,
    Status,
    Transition,
    check_transition,
)
from order_engine.payloads import Payload
from order_engine.store import SeqConflict, Store

from .errors import OrderLost
from .run import OrderRun

log = logging.getLogger("order_engine.engine")


class Recorder:
    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        metrics: Metrics | None,
        on_finished: Callable[[str], None],
        on_written: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`on_written`: told after every committed write (the end of an outage)."""
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._on_finished = on_finished
        self._on_written = on_written
        self._clock = clock
        self._per_status: dict[str, tuple[Counter, Histogram]] = {}

    def now(self) -> float:
        # Microseconds: what every store keeps exactly, so a replayed event equals the live one.
        return round(self._clock(), 6)

    async def create(self, order: Order, message: str, payload: Payload, *, owned: bool) -> None:
        """Store a new order with its pending event (seq 1), then publish that event."""
        check_transition(None, order.status)
        first = OrderEvent(
            order.order_id, 1, order.status, message, order.created_at, payload.to_json()
        )
        await self._store.create(order, first, owned=owned)
        self._on_written()
        if self._metrics is not None:
            self._metrics.events.labels(first.status.value).inc()
        await self._hub.publish(first)

    async def emit(
        self,
        run: OrderRun,
        status: Status,
        message: str,
        payload: Payload,
        update: OrderUpdate | None = None,
        *,
        any_owner: bool = False,
    ) -> None:
        """`any_owner`: a cancellation, written whoever leases the order."""
        order = run.order
        check_transition(order.status, status)
        event = OrderEvent(
            order.order_id, order.last_seq + 1, status, message, self.now(), payload.to_json()
        )
        transition = Transition(event, update or OrderUpdate(), any_owner=any_owner)
        try:
            await self._store.append(transition)
        except SeqConflict:
            raise OrderLost(f"write of seq {event.seq} fenced off") from None
        self._on_written()
        run.order = order.apply(transition)
        if status is Status.ROUTING:
            run.retry_reason = None
        if self._metrics is not None:
            self._measure(order, event)
        if status in TERMINAL:
            self._on_finished(order.order_id)
        # One line per order at INFO (how it ended); its stages only at DEBUG: a line per
        # stage cost several percent of the event loop's time per order.
        log.log(
            logging.INFO if status in TERMINAL else logging.DEBUG,
            "[%s] %s",
            order.order_id,
            status.value,
        )
        await self._hub.publish(event)

    async def publish(self, events: list[OrderEvent]) -> None:
        """Publish events already committed (by a write reported as failed, say)."""
        for event in events:
            await self._hub.publish(event)

    def _measure(self, before: Order, event: OrderEvent) -> None:
        assert self._metrics is not None
        m, status = self._metrics, event.status.value
        # Every event of every order: the labelled children are looked up once per status.
        children = self._per_status.get(status)
        if children is None:
            children = self._per_status[status] = (
                m.events.labels(status),
                m.stage_seconds.labels(status),
            )
        children[0].inc()
        children[1].observe(max(0.0, event.ts - before.updated_at))
        if event.status in TERMINAL:
            code = event.data.get("error", {}).get("code", "")
            m.finished.labels(status, code).inc()
            m.order_seconds.labels(status).observe(max(0.0, event.ts - before.created_at))

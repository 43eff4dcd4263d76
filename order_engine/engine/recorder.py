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

    def stage(
        self,
        run: OrderRun,
        status: Status,
        message: str,
        payload: Payload,
        update: OrderUpdate | None = None,
    ) -> None:
        """A stage that takes no time to speak of (a route quoted from the streamed pools, a
        transaction built): checked and stamped now, written and published with the order's
        next event, in the same transaction. Nobody sees it before it is stored, as any
        event; it costs no commit of its own, and a worker holds the order for one commit
        instead of three."""
        run.staged.append(
            (self._next_event(run, status, message, payload), update or OrderUpdate())
        )

    async def flush(self, run: OrderRun) -> None:
        """Write the staged stages now (before a wait that is not "no time")."""
        if not run.staged:
            return
        last, update = run.staged.pop()
        await self._write(run, last, update)

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
        """Write the event (after any staged ones), then publish them. `any_owner`: a
        cancellation, written whoever leases the order."""
        event = self._next_event(run, status, message, payload)
        await self._write(run, event, update or OrderUpdate(), any_owner=any_owner)

    def _next_event(
        self, run: OrderRun, status: Status, message: str, payload: Payload
    ) -> OrderEvent:
        """The order's next event, after the staged ones if any, checked and stamped now."""
        last = run.staged[-1][0] if run.staged else None
        current, seq = (
            (last.status, last.seq + 1) if last else (run.order.status, run.order.last_seq + 1)
        )
        check_transition(current, status)
        return OrderEvent(run.order_id, seq, status, message, self.now(), payload.to_json())

    async def _write(
        self, run: OrderRun, event: OrderEvent, update: OrderUpdate, *, any_owner: bool = False
    ) -> None:
        staged, run.staged = run.staged, []  # written now, or never (the order stops here)
        for _, earlier_update in reversed(staged):
            update = earlier_update.then(update)
        transition = Transition(
            event, update, any_owner=any_owner, earlier=tuple(e for e, _ in staged)
        )
        order = run.order
        try:
            await self._store.append(transition)
        except SeqConflict:
            raise OrderLost(f"write of seq {transition.events[0].seq} fenced off") from None
        self._on_written()
        run.order = order.apply(transition)
        if any(e.status is Status.ROUTING for e in transition.events):
            run.retry_reason = None
        before = order.updated_at
        for each in transition.events:
            if self._metrics is not None:
                self._measure(order, each, before)
            before = each.ts
            # One line per order at INFO (how it ended); its stages only at DEBUG: a line
            # per stage cost several percent of the event loop's time per order.
            log.log(
                logging.INFO if each.status in TERMINAL else logging.DEBUG,
                "[%s] %s",
                order.order_id,
                each.status.value,
            )
        if event.status in TERMINAL:
            self._on_finished(order.order_id)
        for each in transition.events:
            await self._hub.publish(each)

    async def publish(self, events: list[OrderEvent]) -> None:
        """Publish events already committed (by a write reported as failed, say)."""
        for event in events:
            await self._hub.publish(event)

    def _measure(self, order: Order, event: OrderEvent, since: float) -> None:
        """`since`: when the stage before this event began (the order's or the event's)."""
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
        children[1].observe(max(0.0, event.ts - since))
        if event.status in TERMINAL:
            code = event.data.get("error", {}).get("code", "")
            m.finished.labels(status, code).inc()
            m.order_seconds.labels(status).observe(max(0.0, event.ts - order.created_at))

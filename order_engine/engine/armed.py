"""Limit and sniper orders while they wait: armed, fired, armed again, expired, cancelled.

An armed order is `open` in the store and held in the `TriggerBook`. When its trigger is met
the book hands it here: its routing event is written at once and a worker takes it on. A
transient failure after firing arms it again; its expiry ends it. A cancellation may come
from any replica: it is written fenced on the order's seq alone, so it races the owner's
next write (a fire, an expiry, a worker taking it up) and exactly one of them wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from order_engine.market import MarketData
from order_engine.orders import CANCELLABLE, Order, OrderType, Status
from order_engine.payloads import CancelledData, ErrorInfo, ExpiredData, OpenData, Trigger
from order_engine.store import Store
from order_engine.venues.base import VenueError

from .errors import NotCancellable, OrderLost, OrderNotFound
from .recorder import Recorder
from .run import OrderRun
from .supervision import ErrorHandler, Supervisor
from .triggers import EXPIRY, TriggerBook

log = logging.getLogger("order_engine.engine")

ARMING = "arming"  # the supervisor's group of writes that fire or expire an armed order
GROUPS = (EXPIRY, ARMING)  # what a stopping engine cancels here

_WAITING_FOR = {
    OrderType.LIMIT: "Armed: waiting for the limit price",
    OrderType.SNIPER: "Armed: waiting for the token to trade",
}


class ArmedOrders:
    def __init__(
        self,
        *,
        store: Store,
        recorder: Recorder,
        supervisor: Supervisor,
        market_data: MarketData | None,
        run_for: Callable[[Order], OrderRun],
        begin_routing: Callable[[OrderRun], Awaitable[None]],
        enqueue: Callable[[OrderRun], Awaitable[None]],
        on_error: Callable[[OrderRun], ErrorHandler],
        stopping: Callable[[], bool],
        backoff: Callable[[int], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`begin_routing` writes a fired order's routing event; `enqueue` hands it to the
        workers; `backoff(attempt)`: how long an order armed again waits before it may fire
        again. `market_data`: what triggers watch (None: nothing fires)."""
        self._store = store
        self._recorder = recorder
        self._supervisor = supervisor
        self._run_for = run_for
        self._begin_routing = begin_routing
        self._enqueue = enqueue
        self._on_error = on_error
        self._stopping = stopping
        self._backoff = backoff
        self.book = TriggerBook(
            market_data=market_data,
            supervisor=supervisor,
            fire=self._fire,
            expire=self._expire,
            clock=clock,
        )

    def start(self) -> None:
        self.book.start()

    def by_type(self) -> dict[str, int]:
        return self.book.by_type()

    def forget(self, order_id: str) -> None:
        """The order is finished, or no longer this replica's."""
        self.book.disarm(order_id)

    # -- arming -------------------------------------------------------------------------

    async def arm(self, run: OrderRun) -> None:
        """A new limit or sniper order: record it open, then wait for its trigger."""
        await self._open(run, _WAITING_FOR[run.order.order_type])

    async def rearm(self, run: OrderRun, reason: VenueError) -> None:
        """A fired order that could not fill: wait for the market to come back to it."""
        await self._recorder.flush(run)  # the attempt, as it went: its hold-off counts it
        log.info("[%s] armed again (%s: %s)", run.order_id, reason.code, reason.message)
        hold_off = self._backoff(max(run.order.attempts, 1))
        await self._open(run, f"Armed again: {reason.message}", reason, hold_off)

    def adopt(self, run: OrderRun) -> None:
        """An order stored open (a restart, a replica taken over): armed as it is."""
        self.book.arm(run)

    async def _open(
        self,
        run: OrderRun,
        message: str,
        rearmed: VenueError | None = None,
        hold_off: float = 0.0,
    ) -> None:
        await self._recorder.emit(run, Status.OPEN, message, _open_data(run, rearmed))
        if not self._stopping():
            self.book.arm(run, hold_off=hold_off)

    def _fire(self, run: OrderRun, trigger: Trigger) -> None:
        """Its routing event is written at once, beside every other order the same update
        fired (one batch in the store), before a worker is free to route it: the trigger's
        moment is recorded however many fired."""
        run.trigger = trigger
        self._supervisor.spawn(
            ARMING, self._fired(run), f"fire-{run.order_id}", on_error=self._on_error(run)
        )

    async def _fired(self, run: OrderRun) -> None:
        await self._begin_routing(run)
        run.routing_recorded = True
        await self._enqueue(run)  # a burst of fired orders waits its turn here

    def _expire(self, run: OrderRun) -> None:
        assert run.order.expires_at is not None
        data = ExpiredData(expires_at=run.order.expires_at)
        write = self._recorder.emit(run, Status.EXPIRED, "Order expired unfilled", data)
        self._supervisor.spawn(
            ARMING, write, f"expire-{run.order_id}", on_error=self._on_error(run)
        )

    # -- cancel -------------------------------------------------------------------------

    async def cancel(self, order_id: str, client_id: str | None) -> Order:
        """Cancel an order not yet executing (pending or open), whichever replica holds it."""
        while True:
            order = await self._store.get(order_id)
            if order is None or (client_id is not None and order.client_id != client_id):
                raise OrderNotFound(order_id)
            if order.status not in CANCELLABLE:
                raise NotCancellable(order)
            run = self._run_for(order)
            try:
                await self._recorder.emit(
                    run,
                    Status.CANCELLED,
                    "Order cancelled",
                    CancelledData(previous=order.status.value),
                    any_owner=True,
                )
            except OrderLost:
                continue  # something else happened to it first: judge it again
            return run.order


def _open_data(run: OrderRun, rearmed: VenueError | None) -> OpenData:
    order = run.order
    assert order.expires_at is not None
    sniper = order.order_type is OrderType.SNIPER
    return OpenData(
        order_type=order.order_type.value,
        expires_at=order.expires_at,
        limit_price=order.limit_price,
        mint=run.token_out.mint if sniper else None,
        min_liquidity=None
        if order.min_liquidity is None
        else run.token_in.format(order.min_liquidity),
        rearmed=None if rearmed is None else ErrorInfo(code=rearmed.code, message=rearmed.message),
    )

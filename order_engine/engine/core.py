"""The execution engine: intake, a bounded queue, worker coroutines, the routing step.

Workers take an order from pending to submitted; `Confirmations` sends the transaction and
waits for the chain off the worker. Every status change goes through the `Recorder`
(checked, committed, then published). The store is the truth: `start()` resumes every
unfinished order from its stored status, and an order already submitted is first looked
up on the chain by its signature, so no swap is ever sent twice. Across replicas an engine
works only on the orders it leases (`Leases`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from order_engine.config import EngineSettings
from order_engine.hub import Hub
from order_engine.market import MarketData
from order_engine.metrics import Metrics
from order_engine.orders import Order, OrderType, OrderUpdate, Status
from order_engine.routing import Router
from order_engine.store import Store
from order_engine.venues.base import (
    Chain,
    TransientVenueError,
    VenueError,
)
from order_engine.venues.tokens import TokenRegistry

from .armed import GROUPS as ARMED_GROUPS
from .armed import ArmedOrders
from .confirmations import CONFIRMATIONS, Confirmations
from .errors import EngineUnavailable, Unavailable
from .intake import OrderRequest, new_order
from .leases import Leases
from .outage import WriteOutage
from .recorder import Recorder
from .reports import building_data, report_route
from .resume import Resumer
from .retries import RETRIES, Retries
from .routing_event import RoutingEvents
from .run import OrderRun
from .supervision import Supervisor
from .triggers import limit_threshold

log = logging.getLogger("order_engine.engine")

WORKERS = "workers"  # the supervisor's group of worker loops
BELOW_LIMIT = "below_limit"  # a fired limit order whose route no longer pays its limit


def min_out(expected: int, slippage_bps: int) -> int:
    """Floor, so the tolerance is never wider than asked."""
    return expected * (10_000 - slippage_bps) // 10_000


class Engine:
    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        router: Router,
        chain: Chain,
        registry: TokenRegistry,
        settings: EngineSettings,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        execute: bool = True,
        lease_s: float = 15.0,
        claim_interval: float | None = None,
        metrics: Metrics | None = None,
        market_data: MarketData | None = None,
        quote_from_stream: bool = True,
        default_expiry_s: float = 86_400.0,
    ) -> None:
        """`execute=False`: an API-only replica that stores orders for workers to claim.
        `claim_interval`: how often to look for orders nobody holds (None: never after
        start-up; one process on SQLite has nobody to take over from). `market_data`: the
        streamed pool states armed orders fire on (and routing quotes from while they are
        fresh, with `quote_from_stream`)."""
        self._default_expiry_s = default_expiry_s
        self._router = router
        self._registry = registry
        self._settings = settings
        self._metrics = metrics
        self._execute = execute
        self._queue: asyncio.Queue[OrderRun] = asyncio.Queue(settings.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[int] = set()  # workers in the middle of an order
        self._supervisor = Supervisor()
        self._leases = Leases(
            store=store,
            supervisor=self._supervisor,
            adopt=self._adopt,
            room=lambda: self._queue.maxsize - self._queue.qsize(),
            lease_s=lease_s,
            claim_interval=claim_interval,
        )
        outage = WriteOutage(settings.retry_base_ms / 1000, settings.retry_max_ms / 1000)
        self._recorder = Recorder(
            store=store,
            hub=hub,
            metrics=metrics,
            on_finished=self._finished,
            on_written=outage.written,
            clock=clock,
        )
        self._resumer = Resumer(
            store=store,
            recorder=self._recorder,
            supervisor=self._supervisor,
            settings=settings,
            outage=outage,
            adopt=self._adopt,
            finished=self._finished,
        )
        self._routing_events = RoutingEvents(
            recorder=self._recorder,
            settings=settings,
            market_data=market_data,
            quote_from_stream=quote_from_stream,
        )
        self._armed = ArmedOrders(
            store=store,
            recorder=self._recorder,
            supervisor=self._supervisor,
            market_data=market_data if execute else None,
            run_for=self._run_for,
            begin_routing=self._routing_events.record,
            enqueue=self._queue.put,
            on_error=self._resumer.on_error,
            stopping=self._stop_requested,
            # Created below, and asked only once orders run.
            backoff=lambda attempt: self._retries.backoff(attempt),
            clock=clock,
        )
        self._retries = Retries(
            settings=settings,
            recorder=self._recorder,
            supervisor=self._supervisor,
            requeue=self._queue.put,
            rearm=self._armed.rearm,
            on_error=self._resumer.on_error,
            rng=rng or random.Random(),
        )
        self._confirmations = Confirmations(
            chain=chain,
            settings=settings,
            recorder=self._recorder,
            retries=self._retries,
            supervisor=self._supervisor,
            on_error=self._resumer.on_error,
        )
        self._accepting = False
        self._stopping = False

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Resume the unfinished orders this replica may take, then start the workers."""
        if self._execute:
            await self._leases.start()
            self._armed.start()
            self._workers = [
                self._supervisor.spawn(WORKERS, self._worker(n), f"worker-{n}")
                for n in range(self._settings.workers)
            ]
        self._accepting = True

    async def stop(self, grace: float) -> None:
        """Refuse new orders, let the stages under way reach the store, then stop.

        Idle workers stop at once; busy ones finish their current stage; confirmations get
        the same grace to land, those started meanwhile too. Whatever is left (queued
        orders, slow confirmations) keeps its stored status and is resumed by the next
        start, here or, once released, on another replica."""
        if self._stopping:
            return
        self._accepting = False
        self._stopping = True
        await self._leases.stop()
        # Workers check `_stopping` between orders; an idle one waits on the queue.
        for n, task in enumerate(self._workers):
            if n not in self._busy:
                task.cancel()
        late = await self._supervisor.drain((WORKERS, CONFIRMATIONS), grace)
        if late:
            log.warning("shutdown: %d stage(s) did not finish within %.1fs", late, grace)
        await self._supervisor.cancel(WORKERS, CONFIRMATIONS, RETRIES, *ARMED_GROUPS)
        if left := self._queue.qsize():
            log.info("shutdown: %d queued order(s) stay pending for the next start", left)
        if self._execute:
            await self._leases.release()

    async def abort(self) -> None:
        """Stop at once, mid-stage, as a crash would (used by recovery tests)."""
        self._accepting = False
        self._stopping = True
        await self._leases.stop()
        await self._supervisor.cancel(WORKERS, CONFIRMATIONS, RETRIES, *ARMED_GROUPS)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def held(self) -> int:
        """Orders this engine holds: queued, being worked on, awaiting confirmation."""
        return len(self._leases)

    @property
    def transactions_in_flight(self) -> int:
        """Transactions sent (or being built) whose fate the chain has not told yet."""
        return self._confirmations.slots.taken

    def open_orders(self) -> dict[str, int]:
        """Orders armed here, waiting for their trigger, by type."""
        return self._armed.by_type()

    async def cancel(self, order_id: str, *, client_id: str | None = None) -> Order:
        """Cancel an order not yet executing (pending or open), on any replica; raises
        OrderNotFound (unknown, or another client's) or NotCancellable."""
        return await self._armed.cancel(order_id, client_id)

    # -- intake -------------------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> Order:
        """Store the order with its pending event, queue it, return it.

        Refused (EngineUnavailable) before anything is stored when the queue is full, so a
        refused client has nothing to reconcile."""
        if not self._accepting:
            raise EngineUnavailable(
                Unavailable.SHUTTING_DOWN, "the engine is shutting down", retry_after=5
            )
        if self._execute and self._queue.full():
            raise EngineUnavailable(Unavailable.QUEUE_FULL, "the order queue is full", 1)
        order, pending = new_order(
            request, self._recorder.now(), default_expiry_s=self._default_expiry_s
        )
        await self._recorder.create(
            order, "Order received and queued", pending, owned=self._execute
        )
        if not self._execute:
            return order  # a worker replica claims it
        self._leases.hold(order.order_id)
        # The queue may have filled while the row was written; the order is stored, so it
        # is queued anyway (waiting) rather than lost: put() blocks only this request.
        await self._queue.put(self._run_for(order))
        return order

    def _run_for(self, order: Order) -> OrderRun:
        return OrderRun(
            order=order,
            token_in=self._registry.resolve(order.token_in),
            token_out=self._registry.resolve(order.token_out, upcoming=True),
        )

    def _adopt(self, order: Order) -> None:
        """Take on an order resumed from the store, from its stored status."""
        run = self._run_for(order)
        if order.status is Status.SUBMITTED:
            self._confirmations.wait(run)
            return
        if order.status is Status.OPEN:
            self._armed.adopt(run)
            return
        try:
            self._queue.put_nowait(run)
        except asyncio.QueueFull:  # filled while the claim was in flight: wait a turn
            self._retries.requeue_after(run, 0)

    # -- workers ------------------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        while not self._stopping:
            run = await self._queue.get()
            self._busy.add(n)
            try:
                await self._supervisor.guard(
                    self._advance(run), f"worker-{n}", self._resumer.on_error(run)
                )
            finally:
                self._busy.discard(n)

    async def _advance(self, run: OrderRun) -> None:
        """Take the order from its current (not yet submitted) status to submitted; a new
        limit order only as far as armed."""
        if run.status is Status.PENDING and run.order.order_type is not OrderType.MARKET:
            await self._armed.arm(run)
            return
        if run.routing_recorded:
            run.routing_recorded = False  # by the trigger that fired it
        else:
            await self._routing_events.record(run, may_stage=True)
        if self._stop_requested():
            return
        try:
            route = await self._router.route(run.token_in, run.token_out, run.order.amount)
        except VenueError as exc:
            await self._retries.retry_or_fail(run, exc)
            return
        floor = min_out(route.amount_out, run.order.slippage_bps)
        limit = limit_threshold(run)
        if limit is not None:
            # Never fill below the limit, whatever the slippage tolerance allows.
            if route.amount_out < limit:
                out = run.token_out.format(route.amount_out)
                await self._armed.rearm(
                    run,
                    TransientVenueError(
                        BELOW_LIMIT,
                        f"the best route pays {out} {run.token_out.symbol}, below the limit",
                    ),
                )
                return
            floor = max(floor, limit)
        report_route(run, route, self._metrics)
        # Written with the transaction's signature (submitted), in one commit.
        self._recorder.stage(
            run,
            Status.BUILDING,
            f"Building transaction for {route.venue}" + (" (split route)" if route.split else ""),
            building_data(run, route, floor),
            OrderUpdate(dex=route.venue, min_amount_out=floor),
        )
        if self._stop_requested():
            return
        await self._confirmations.send(run, route, floor)

    def _stop_requested(self) -> bool:
        """Checked between stages: a stopping engine leaves the order at its stored stage."""
        return self._stopping

    def _finished(self, order_id: str) -> None:
        """The order is finished, or no longer this replica's: let go of it."""
        self._leases.drop(order_id)
        self._armed.forget(order_id)

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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from order_engine.config import EngineSettings
from order_engine.hub import Hub
from order_engine.market import MarketData
from order_engine.metrics import Metrics
from order_engine.orders import CANCELLABLE, Order, OrderType, OrderUpdate, Status
from order_engine.payloads import (
    CancelledData,
    ErrorInfo,
    ExpiredData,
    OpenData,
    PendingData,
    RoutingData,
    Trigger,
)
from order_engine.routing import Router
from order_engine.store import Store, StoreError
from order_engine.venues.base import (
    Chain,
    PermanentVenueError,
    TransientVenueError,
    VenueError,
)
from order_engine.venues.tokens import Token, TokenRegistry

from .confirmations import CONFIRMATIONS, Confirmations
from .errors import EngineUnavailable, NotCancellable, OrderLost, OrderNotFound, Unavailable
from .leases import Leases
from .recorder import Recorder
from .reports import building_data, report_route
from .retries import RETRIES, Retries
from .run import OrderRun
from .supervision import ErrorHandler, Supervisor
from .triggers import EXPIRY, TriggerBook, limit_threshold

log = logging.getLogger("order_engine.engine")

WORKERS = "workers"  # the supervisor's group of worker loops
ARMING = "arming"  # the supervisor's group of writes that arm, expire or re-arm an order
BELOW_LIMIT = "below_limit"  # a fired limit order whose route no longer pays its limit
NOT_SUPPORTED = "not_supported"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated order, as the API (or any other front end) hands it over."""

    token_in: Token
    token_out: Token
    amount: int  # base units of token_in
    slippage_bps: int
    client_order_id: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    client_id: str | None = None  # who submitted it, when authentication is on
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None  # least token_out per one token_in (UI units)
    expires_at: float | None = None  # limit and sniper: epoch seconds (None: the default)
    min_liquidity: int | None = None  # sniper: base units of token_in the pool must hold


def decimal_text(value: Decimal) -> str:
    """Exact, without exponent or trailing zeros: 1E+2 -> "100", 0.50 -> "0.5"."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


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
        self._store = store
        self._market_data = market_data
        self._quote_from_stream = quote_from_stream
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
        self._recorder = Recorder(
            store=store, hub=hub, metrics=metrics, on_finished=self._finished, clock=clock
        )
        self._triggers = TriggerBook(
            market_data=market_data if execute else None,
            supervisor=self._supervisor,
            fire=self._fire,
            expire=self._expire,
            clock=clock,
        )
        self._retries = Retries(
            settings=settings,
            recorder=self._recorder,
            supervisor=self._supervisor,
            requeue=self._queue.put,
            rearm=self._rearm,
            on_error=self._resume_on_error,
            rng=rng or random.Random(),
        )
        self._confirmations = Confirmations(
            chain=chain,
            settings=settings,
            recorder=self._recorder,
            retries=self._retries,
            supervisor=self._supervisor,
            on_error=self._resume_on_error,
        )
        self._accepting = False
        self._stopping = False

    # -- start and stop -----------------------------------------------------------------

    async def start(self) -> None:
        """Resume the unfinished orders this replica may take, then start the workers."""
        if self._execute:
            await self._leases.start()
            self._triggers.start()
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
        await self._supervisor.cancel(WORKERS, CONFIRMATIONS, RETRIES, EXPIRY, ARMING)
        if left := self._queue.qsize():
            log.info("shutdown: %d queued order(s) stay pending for the next start", left)
        if self._execute:
            await self._leases.release()

    async def abort(self) -> None:
        """Stop at once, mid-stage, as a crash would (used by recovery tests)."""
        self._accepting = False
        self._stopping = True
        await self._leases.stop()
        await self._supervisor.cancel(WORKERS, CONFIRMATIONS, RETRIES, EXPIRY, ARMING)

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
        return self._triggers.by_type()

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
        now = self._recorder.now()
        expires_at = None
        if request.order_type is not OrderType.MARKET:
            expires_at = request.expires_at or round(now + self._default_expiry_s, 6)
        order = Order(
            order_id=str(uuid.uuid4()),
            token_in=request.token_in.symbol,
            token_out=request.token_out.symbol,
            amount=request.amount,
            slippage_bps=request.slippage_bps,
            status=Status.PENDING,
            last_seq=1,
            attempts=0,
            created_at=now,
            updated_at=now,
            client_order_id=request.client_order_id,
            idempotency_key=request.idempotency_key,
            request_hash=request.request_hash,
            client_id=request.client_id,
            order_type=request.order_type,
            limit_price=None if request.limit_price is None else decimal_text(request.limit_price),
            expires_at=expires_at,
            min_liquidity=request.min_liquidity,
        )
        pending = PendingData(
            token_in=request.token_in.symbol,
            token_out=request.token_out.symbol,
            amount=request.token_in.format(request.amount),
            slippage_bps=request.slippage_bps,
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
            self._triggers.arm(run)
            return
        try:
            self._queue.put_nowait(run)
        except asyncio.QueueFull:  # filled while the claim was in flight: wait a turn
            self._retries.requeue_after(run, 0)

    # -- cancel -------------------------------------------------------------------------

    async def cancel(self, order_id: str, *, client_id: str | None = None) -> Order:
        """Cancel an order not yet executing: pending or open, on any replica.

        The cancellation is written whoever leases the order, fenced on its seq alone: it
        races the owner's next write (a trigger firing, an expiry, a worker taking it up)
        and exactly one of them wins. The owner learns it lost at that write."""
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

    # -- armed orders -------------------------------------------------------------------

    def _open_data(self, order: Order, rearmed: VenueError | None = None) -> OpenData:
        assert order.expires_at is not None
        return OpenData(
            order_type=order.order_type.value,
            expires_at=order.expires_at,
            limit_price=order.limit_price,
            rearmed=None
            if rearmed is None
            else ErrorInfo(code=rearmed.code, message=rearmed.message),
        )

    async def _arm(self, run: OrderRun, message: str, rearmed: VenueError | None = None) -> None:
        """Record the order as open, then wait for its trigger."""
        await self._recorder.emit(run, Status.OPEN, message, self._open_data(run.order, rearmed))
        if not self._stop_requested():
            self._triggers.arm(run)

    async def _rearm(self, run: OrderRun, reason: VenueError) -> None:
        log.info("[%s] armed again (%s: %s)", run.order_id, reason.code, reason.message)
        await self._arm(run, f"Armed again: {reason.message}", reason)

    def _fire(self, run: OrderRun, trigger: Trigger) -> None:
        """The market met the order's limit. Its routing event is written at once, beside
        every other order fired by the same update (one batch in the store), before a worker
        is free to route it: the trigger's moment is recorded, however many fired."""
        run.trigger = trigger
        self._supervisor.spawn(
            ARMING, self._fired(run), f"fire-{run.order_id}", on_error=self._resume_on_error(run)
        )

    async def _fired(self, run: OrderRun) -> None:
        await self._record_routing(run)
        run.routing_recorded = True
        await self._queue.put(run)  # a burst of fired orders waits its turn here

    def _expire(self, run: OrderRun) -> None:
        assert run.order.expires_at is not None
        data = ExpiredData(expires_at=run.order.expires_at)
        write = self._recorder.emit(run, Status.EXPIRED, "Order expired unfilled", data)
        self._supervisor.spawn(
            ARMING, write, f"expire-{run.order_id}", on_error=self._resume_on_error(run)
        )

    # -- workers ------------------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        while not self._stopping:
            run = await self._queue.get()
            self._busy.add(n)
            try:
                await self._supervisor.guard(
                    self._advance(run), f"worker-{n}", self._resume_on_error(run)
                )
            finally:
                self._busy.discard(n)

    async def _advance(self, run: OrderRun) -> None:
        """Take the order from its current (not yet submitted) status to submitted; a new
        limit order only as far as armed."""
        if run.order.order_type is OrderType.SNIPER:
            # The API refuses them until launches trigger orders; one stored by another
            # version fails plainly rather than waiting on nothing.
            error = PermanentVenueError(NOT_SUPPORTED, "sniper orders are not executed yet")
            await self._retries.fail(run, error)
            return
        if run.status is Status.PENDING and run.order.order_type is not OrderType.MARKET:
            await self._arm(run, "Armed: waiting for the limit price")
            return
        if run.routing_recorded:
            run.routing_recorded = False  # by the trigger that fired it
        else:
            await self._record_routing(run)
        if self._stop_requested():
            return
        try:
            route = await self._router.route(run.token_in, run.token_out, run.order.amount)
        except VenueError as exc:
            await self._retries.retry_or_fail(run, exc)
            return
        floor = min_out(route.amount_out, run.order.slippage_bps)
        if run.order.order_type is not OrderType.MARKET:
            # Never fill below the limit, whatever the slippage tolerance allows.
            limit = limit_threshold(run)
            if route.amount_out < limit:
                out = run.token_out.format(route.amount_out)
                await self._rearm(
                    run,
                    TransientVenueError(
                        BELOW_LIMIT,
                        f"the best route pays {out} {run.token_out.symbol}, below the limit",
                    ),
                )
                return
            floor = max(floor, limit)
        report_route(run, route, self._metrics)
        await self._recorder.emit(
            run,
            Status.BUILDING,
            f"Building transaction for {route.venue}" + (" (split route)" if route.split else ""),
            building_data(run, route, floor),
            OrderUpdate(dex=route.venue, min_amount_out=floor),
        )
        if self._stop_requested():
            return
        await self._confirmations.send(run, route, floor)

    async def _record_routing(self, run: OrderRun) -> None:
        """The routing stage begins: a new attempt, a retry, or a fired trigger."""
        attempt = self._next_attempt(run)
        reason = run.retry_reason
        retry_reason = (
            None if reason is None else ErrorInfo(code=reason.code, message=reason.message)
        )
        trigger, run.trigger = run.trigger, None
        message = "Comparing prices on Raydium and Meteora"
        if trigger is not None:
            message = f"Limit price reached at slot {trigger.slot}: routing"
        elif attempt > 1 and run.order.order_type is OrderType.MARKET:
            message = f"Retrying (attempt {attempt} of {self._settings.max_attempts})"
        await self._recorder.emit(
            run,
            Status.ROUTING,
            message,
            RoutingData(
                attempt=attempt,
                retry_reason=retry_reason,
                quote_source=self._quote_source(),
                trigger=trigger,
            ),
            OrderUpdate(attempts=attempt),
        )

    def _quote_source(self) -> str:
        data = self._market_data
        streamed = self._quote_from_stream and data is not None and data.fresh()
        return "stream" if streamed else "rpc"

    def _stop_requested(self) -> bool:
        """Checked between stages: a stopping engine leaves the order at its stored stage."""
        return self._stopping

    def _next_attempt(self, run: OrderRun) -> int:
        """Pending starts attempt 1; a retry is the next attempt; an order resumed after a
        crash mid-attempt continues that attempt (a crash is not the venue's failure)."""
        if run.status is Status.PENDING:
            return 1
        if run.retry_reason is not None or run.status is Status.OPEN:
            return run.order.attempts + 1
        return max(run.order.attempts, 1)

    # -- errors -------------------------------------------------------------------------

    def _resume_on_error(self, run: OrderRun) -> ErrorHandler:
        """The one error path of work on an order: a write failed, was fenced off, or a bug
        struck. What the store holds is the truth now: read it back (waiting out an outage)
        and go on from there, unless the order is finished or another replica owns it."""

        def resume(exc: Exception) -> None:
            order_id = run.order_id
            if isinstance(exc, (OrderLost, StoreError)):
                log.warning("[%s] %s; resuming from the stored state", order_id, exc)
            else:  # one bad order must not take a worker down, nor stay stuck
                log.error("[%s] unexpected error; resuming", order_id, exc_info=exc)
            self._supervisor.spawn(
                RETRIES, self._reload(order_id, run.order.last_seq), f"reload-{order_id}"
            )

        return resume

    async def _reload(self, order_id: str, known_seq: int) -> None:
        delay = self._settings.retry_base_ms / 1000
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

    def _finished(self, order_id: str) -> None:
        """The order is finished, or no longer this replica's: let go of it."""
        self._leases.drop(order_id)
        self._triggers.disarm(order_id)

"""The execution engine: a bounded queue, worker coroutines, the order lifecycle.

Workers take an order from routing to submitted; the wait for confirmation is handed to a
task of its own so a worker never idles on the chain (confirmations are pipelined, capped
by `max_in_flight`). Every status change goes through `check_transition`, is committed to
the store, and only then published. The store is the truth: after a crash, `start()` resumes
every unfinished order from its stored status, and an order already submitted is first
looked up on the chain by its signature, so no swap is ever sent twice.

Across replicas an engine works only on orders leased to it: it renews its leases while it
lives, claims orders whose lease expired (a dead replica's) or that nobody owns (taken by an
API-only replica), and every write is fenced on ownership, so a replica that lost an order
stops touching it at its next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from order_engine.config import EngineSettings
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
from order_engine.routing import Route, Router, gain_bps
from order_engine.store import SeqConflict, Store, StoreError
from order_engine.venues.base import (
    Chain,
    Quote,
    Receipt,
    TransientVenueError,
    TxState,
    TxStatus,
    VenueError,
)
from order_engine.venues.tokens import Token, TokenRegistry

log = logging.getLogger("order_engine.engine")
_T = TypeVar("_T")

TX_UNKNOWN = "tx_unknown"
# How often an unseen transaction is looked for again until its blockhash expires: a slot.
UNSEEN_RECHECK_S = 0.4
INTERNAL_ERROR = "internal_error"


class OrderLost(Exception):
    """A write was fenced off: another replica owns the order now (or this replica's view
    of it is stale). The stored state decides what happens next."""


class EngineUnavailable(Exception):
    """The engine cannot take orders now (queue full, shutting down)."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


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


@dataclass(slots=True)
class _Run:
    """An order being worked on: its stored state as this process last wrote it."""

    order: Order
    token_in: Token
    token_out: Token
    retry_reason: VenueError | None = None
    route: Route | None = field(default=None)
    last_valid_slot: int | None = None  # of the transaction sent for the current attempt

    @property
    def status(self) -> Status:
        return self.order.status


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
    ) -> None:
        """`execute=False`: an API-only replica that stores orders for workers to claim.
        `claim_interval`: how often to look for orders nobody holds (None: never after
        start-up; one process on SQLite has nobody to take over from)."""
        self._store = store
        self._hub = hub
        self._router = router
        self._chain = chain
        self._registry = registry
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[_Run] = asyncio.Queue(settings.queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._confirms: set[asyncio.Task[None]] = set()
        self._retries: set[asyncio.Task[None]] = set()
        self._in_flight = asyncio.Semaphore(settings.max_in_flight)
        self._busy: dict[int, str] = {}  # worker number -> order id (for shutdown logs)
        self._metrics = metrics
        self._execute = execute
        self._lease_s = lease_s
        self._claim_interval = claim_interval
        self._active: set[str] = set()  # orders this engine holds (queued, running, waiting)
        self._leases: asyncio.Task[None] | None = None
        self._new_orders = asyncio.Event()
        self._accepting = False
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the unfinished orders this replica may take, then start the workers."""
        if self._execute:
            # Everything left unfinished, however many: what exceeds the queue waits its turn.
            resumed = await self._claim(own_too=True, limit=2**31 - 1)
            if resumed:
                log.info("recovery: resuming %d unfinished order(s)", resumed)
            self._workers = [
                asyncio.create_task(self._worker(n), name=f"worker-{n}")
                for n in range(self._settings.workers)
            ]
            # Without claims (one process on SQLite) nobody else could take an order over:
            # leases need no upkeep.
            if self._claim_interval is not None:
                await self._store.on_new_orders(self._new_orders.set)
                self._leases = asyncio.create_task(self._keep_leases(), name="leases")
        self._accepting = True

    async def _claim(self, *, own_too: bool = False, limit: int | None = None) -> int:
        if limit is None:
            limit = self._queue.maxsize - self._queue.qsize()
        claimed = [
            o
            for o in await self._store.claim(limit, own_too=own_too)
            if o.order_id not in self._active
        ]
        for order in claimed:
            self._adopt(order)
        return len(claimed)

    def _adopt(self, order: Order) -> None:
        self._active.add(order.order_id)
        run = self._run_for(order)
        if order.status is Status.SUBMITTED:
            self._spawn(self._confirms, self._confirm(run), f"confirm-{order.order_id}", run)
        else:
            try:
                self._queue.put_nowait(run)
            except asyncio.QueueFull:  # filled while the claim was in flight: wait a turn
                self._spawn(self._retries, self._requeue_after(run, 0), f"requeue-{order.order_id}")

    async def _keep_leases(self) -> None:
        """Renew this replica's leases well before they expire; take over orders nobody
        holds. A store outage is waited out: leases lapse, and fencing keeps it safe."""
        assert self._claim_interval is not None
        renew_every = self._lease_s / 3
        tick = min(renew_every, self._claim_interval)
        loop = asyncio.get_running_loop()
        next_renewal = loop.time() + renew_every
        while True:
            # Woken early when an API replica stores an order: claimed at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._new_orders.wait()
            self._new_orders.clear()
            try:
                if loop.time() >= next_renewal:
                    next_renewal = loop.time() + renew_every
                    await self._store.renew(list(self._active))
                taken = await self._claim()
                if taken:
                    log.info("claimed %d order(s) nobody was working on", taken)
            except StoreError as exc:
                log.warning("lease upkeep failed (%s); retrying", exc)
            except Exception:  # a bug must not stop the upkeep: leases would lapse
                log.exception("lease upkeep failed unexpectedly; retrying")

    async def stop(self, grace: float) -> None:
        """Refuse new orders, let the stages under way reach the store, then stop.

        Idle workers stop at once; busy ones finish their current stage; confirmations get
        the same grace to land. Whatever is left (queued orders, slow confirmations) keeps
        its stored status and is resumed by the next start."""
        if self._stopping:
            return
        self._accepting = False
        self._stopping = True
        # No more claims while stopping: what is claimed now would only be handed back.
        await self._cancel_all([self._leases] if self._leases else [])
        idle = [t for n, t in enumerate(self._workers) if n not in self._busy]
        busy = [t for n, t in enumerate(self._workers) if n in self._busy]
        await self._cancel_all(idle)
        waiting = [*busy, *self._confirms]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=grace)
            if late:
                log.warning("shutdown: %d stage(s) did not finish within %.1fs", len(late), grace)
        await self._cancel_all([*self._workers, *self._confirms, *self._retries])
        left = self._queue.qsize()
        if left:
            log.info("shutdown: %d queued order(s) stay pending for the next start", left)
        if self._execute:
            try:
                # Another replica may take them at once instead of waiting for expiry.
                released = await self._store.release()
            except StoreError as exc:
                log.warning("shutdown: leases not released (%s); they will expire", exc)
            else:
                if released:
                    log.info("shutdown: released %d unfinished order(s)", released)

    async def abort(self) -> None:
        """Stop at once, mid-stage, as a crash would (used by recovery tests)."""
        self._accepting = False
        self._stopping = True
        await self._cancel_all([self._leases] if self._leases else [])
        await self._cancel_all([*self._workers, *self._confirms, *self._retries])

    @staticmethod
    async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _now(self) -> float:
        # Microseconds: what every store keeps exactly, so a replayed event equals the live one.
        return round(self._clock(), 6)

    def _stop_requested(self) -> bool:
        """Checked between stages: a stopping engine leaves the order at its stored stage."""
        return self._stopping

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def held(self) -> int:
        """Orders this engine holds: queued, being worked on, awaiting confirmation."""
        return len(self._active)

    # -- intake -------------------------------------------------------------------------

    async def submit(self, request: OrderRequest) -> Order:
        """Store the order with its pending event, queue it, return it.

        Refused (EngineUnavailable) before anything is stored when the queue is full, so a
        refused client has nothing to reconcile."""
        if not self._accepting:
            raise EngineUnavailable("the engine is shutting down", retry_after=5)
        if self._execute and self._queue.full():
            raise EngineUnavailable("the order queue is full", retry_after=1)
        now = self._now()
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
        )
        check_transition(None, Status.PENDING)
        first = OrderEvent(
            order_id=order.order_id,
            seq=1,
            status=Status.PENDING,
            message="Order received and queued",
            ts=now,
            data={
                "tokenIn": request.token_in.symbol,
                "tokenOut": request.token_out.symbol,
                "amount": request.token_in.format(request.amount),
                "slippageBps": request.slippage_bps,
            },
        )
        await self._store.create(order, first, owned=self._execute)
        if self._metrics is not None:
            self._metrics.events.labels(Status.PENDING.value).inc()
        await self._hub.publish(first)
        if not self._execute:
            return order  # a worker replica claims it
        self._active.add(order.order_id)
        # The queue may have filled while the row was written; the order is stored, so it
        # is queued anyway (waiting) rather than lost: put() blocks only this request.
        await self._queue.put(self._run_for(order))
        return order

    def _run_for(self, order: Order) -> _Run:
        return _Run(
            order=order,
            token_in=self._registry.resolve(order.token_in),
            token_out=self._registry.resolve(order.token_out),
        )

    # -- workers ------------------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        while not self._stopping:
            run = await self._queue.get()
            self._busy[n] = run.order.order_id
            try:
                await self._advance(run)
            except asyncio.CancelledError:
                raise
            except (OrderLost, StoreError) as exc:
                self._resume_from_store(run, exc)
            except Exception as exc:
                # A bug: one bad order must not take the worker down, nor stay stuck; it
                # goes on from its stored state after a backoff.
                log.exception("[%s] worker %d: unexpected error", run.order.order_id, n)
                self._resume_from_store(run, exc)
            finally:
                self._busy.pop(n, None)

    async def _advance(self, run: _Run) -> None:
        """Take the order from its current (non-submitted) status to submitted."""
        order = run.order
        attempt = self._next_attempt(run)
        data: dict[str, Any] = {"attempt": attempt}
        if run.retry_reason is not None:
            data["retryReason"] = {
                "code": run.retry_reason.code,
                "message": run.retry_reason.message,
            }
        message = "Comparing prices on Raydium and Meteora"
        if attempt > 1:
            message = f"Retrying (attempt {attempt} of {self._settings.max_attempts})"
        await self._emit(run, Status.ROUTING, message, data, OrderUpdate(attempts=attempt))
        if self._stop_requested():
            return

        try:
            route = await self._router.route(run.token_in, run.token_out, order.amount)
        except VenueError as exc:
            await self._retry_or_fail(run, exc)
            return
        run.route = route
        expected = route.amount_out
        floor = min_out(expected, order.slippage_bps)
        self._log_decision(run, route)
        await self._emit(
            run,
            Status.BUILDING,
            f"Building transaction for {route.dex}" + (" (split route)" if route.split else ""),
            self._building_data(run, route, floor),
            OrderUpdate(dex=route.dex, min_amount_out=floor),
        )
        if self._stop_requested():
            return

        await self._in_flight.acquire()
        try:
            try:
                tx = await self._chain.build(route.legs, floor)
            except VenueError as exc:
                # Nothing was signed or sent: trying again is safe.
                self._in_flight.release()
                await self._retry_or_fail(run, exc)
                return
            # The signature is stored BEFORE the transaction is sent: after a crash the
            # engine can always ask the chain what became of it.
            await self._emit(
                run,
                Status.SUBMITTED,
                f"Transaction sent to {route.dex}",
                {"dex": route.dex, "txHash": tx.signature, "lastValidSlot": tx.last_valid_slot},
                OrderUpdate(tx_hash=tx.signature),
            )
            run.last_valid_slot = tx.last_valid_slot
            try:
                await self._chain.submit(tx)
            except VenueError as exc:
                # Sent or not, the chain will say: the confirmation step asks by signature.
                log.warning("[%s] submit error (%s); asking the chain", order.order_id, exc.code)
        except BaseException:
            self._in_flight.release()
            raise
        self._spawn(
            self._confirms,
            self._confirm(run, holds_slot=True),
            f"confirm-{order.order_id}",
            run,
        )

    def _next_attempt(self, run: _Run) -> int:
        """Pending starts attempt 1; a retry is the next attempt; an order resumed after a
        crash mid-attempt continues that attempt (a crash is not the venue's failure)."""
        if run.status is Status.PENDING:
            return 1
        if run.retry_reason is not None:
            return run.order.attempts + 1
        return max(run.order.attempts, 1)

    async def _confirm(self, run: _Run, holds_slot: bool = False) -> None:
        order = run.order
        signature = order.tx_hash
        assert signature is not None, "a submitted order has a signature"
        try:
            timeout = self._settings.confirm_timeout_ms / 1000
            while True:
                status = await self._ask_chain(order.order_id, signature, timeout)
                if status.state is TxState.PENDING:
                    # A transaction still pending may yet land; deciding now could execute
                    # the order twice: wait until the chain settles it (blockhash expiry).
                    log.warning(
                        "[%s] %s still pending after %.0fs", order.order_id, signature, timeout
                    )
                    continue
                if status.state is TxState.UNKNOWN and await self._may_arrive(run, signature):
                    # Unseen, but whoever sent it (perhaps a replica that lost its lease)
                    # may have it in flight: only its blockhash expiring settles it.
                    await asyncio.sleep(UNSEEN_RECHECK_S)
                    continue
                break
        finally:
            if holds_slot:
                self._in_flight.release()

        if status.state is TxState.LANDED:
            assert status.receipt is not None
            await self._confirmed(run, status.receipt)
        elif status.state is TxState.FAILED:
            assert status.error is not None
            await self._retry_or_fail(run, status.error)
        else:
            # The chain never saw it: the crash came between storing and sending.
            await self._retry_or_fail(
                run, TransientVenueError(TX_UNKNOWN, "the chain never received the transaction")
            )

    async def _may_arrive(self, run: _Run, signature: str) -> bool:
        slot = run.last_valid_slot
        if slot is None:  # resumed from the store: the submitted event recorded it
            events = await self._store.events(run.order.order_id)
            sent = [e for e in events if e.data.get("txHash") == signature]
            recorded = sent[-1].data.get("lastValidSlot") if sent else None
            if not isinstance(recorded, int):
                return False  # stored before slots were recorded: the old rule stands
            slot = run.last_valid_slot = recorded
        return await self._patiently(
            run.order.order_id, lambda: self._chain.can_still_land(signature, slot)
        )

    async def _ask_chain(self, order_id: str, signature: str, timeout: float) -> TxStatus:
        return await self._patiently(order_id, lambda: self._chain.wait(signature, timeout))

    async def _patiently(self, order_id: str, ask: Callable[[], Awaitable[_T]]) -> _T:
        """Ask the chain; while it cannot answer, ask again (backing off): a transaction's
        fate is never guessed."""
        delay = self._settings.retry_base_ms / 1000
        while True:
            try:
                return await ask()
            except VenueError as exc:
                log.warning("[%s] cannot ask the chain (%s); asking again", order_id, exc.code)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max_ms / 1000)

    async def _confirmed(self, run: _Run, receipt: Receipt) -> None:
        price = float(
            run.token_out.to_ui(receipt.amount_out) / run.token_in.to_ui(receipt.amount_in)
        )
        dex = run.order.dex or max(receipt.legs, key=lambda leg: leg.amount_in).venue
        data: dict[str, Any] = {
            "dex": dex,
            "txHash": receipt.signature,
            "executedPrice": price,
            "amountIn": run.token_in.format(receipt.amount_in),
            "amountOut": run.token_out.format(receipt.amount_out),
        }
        if len(receipt.legs) > 1:
            data["legs"] = [
                {
                    "dex": leg.venue,
                    "share": leg.amount_in / receipt.amount_in,
                    "amountIn": run.token_in.format(leg.amount_in),
                    "amountOut": run.token_out.format(leg.amount_out),
                }
                for leg in receipt.legs
            ]
        await self._emit(
            run,
            Status.CONFIRMED,
            f"Swapped {data['amountIn']} {run.token_in.symbol} for {data['amountOut']} "
            f"{run.token_out.symbol} on {dex}",
            data,
            OrderUpdate(executed_price=price, amount_out=receipt.amount_out),
        )

    async def _retry_or_fail(self, run: _Run, error: VenueError) -> None:
        attempt = max(run.order.attempts, 1)
        if not error.transient or attempt >= self._settings.max_attempts:
            await self._fail(run, error)
            return
        delay = self._backoff(attempt)
        log.info(
            "[%s] attempt %d failed (%s: %s); retrying in %.0f ms",
            run.order.order_id,
            attempt,
            error.code,
            error.message,
            delay * 1000,
        )
        run.retry_reason = error
        self._spawn(self._retries, self._requeue_after(run, delay), f"retry-{run.order.order_id}")

    def _backoff(self, attempt: int) -> float:
        """Exponential with full jitter: spreads retries of orders that failed together."""
        ceiling = min(
            self._settings.retry_max_ms, self._settings.retry_base_ms * 2 ** (attempt - 1)
        )
        return self._rng.uniform(ceiling / 2, ceiling) / 1000

    async def _requeue_after(self, run: _Run, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._queue.put(run)

    async def _fail(self, run: _Run, error: VenueError) -> None:
        attempts = max(run.order.attempts, 1)
        log.info("[%s] failed: %s: %s", run.order.order_id, error.code, error.message)
        await self._emit(
            run,
            Status.FAILED,
            f"Order failed: {error.message}",
            {"error": {"code": error.code, "message": error.message}, "attempts": attempts},
            OrderUpdate(error_code=error.code, error_message=error.message),
        )

    # -- events -------------------------------------------------------------------------

    async def _emit(
        self,
        run: _Run,
        status: Status,
        message: str,
        data: dict[str, Any],
        update: OrderUpdate,
    ) -> None:
        """The one path of every status change: check, commit, then publish."""
        order = run.order
        check_transition(order.status, status)
        now = self._now()
        event = OrderEvent(order.order_id, order.last_seq + 1, status, message, now, data)
        try:
            await self._store.append(Transition(event, update))
        except SeqConflict:
            # Usually another replica took the order over; `_reload` checks.
            raise OrderLost(f"write of seq {event.seq} fenced off") from None
        run.order = _apply(order, event, update)
        if self._metrics is not None:
            self._measure(order, event)
        if status in TERMINAL:
            self._active.discard(order.order_id)
        if status is Status.ROUTING:
            run.retry_reason = None
        log.info("[%s] %s", order.order_id, status.value)
        await self._hub.publish(event)

    def _resume_from_store(self, run: _Run, cause: Exception) -> None:
        """A write failed, or was fenced off: what the store holds is the truth now. Read it
        back (waiting out an outage) and go on from there, unless the order is finished or
        another replica owns it."""
        order_id = run.order.order_id
        log.warning("[%s] %s; resuming from the stored state", order_id, cause)
        self._spawn(self._retries, self._reload(order_id, run.order.last_seq), f"reload-{order_id}")

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
        for event in unseen:
            await self._hub.publish(event)
        if order is None or order.terminal or order.owner != self._store.owner:
            self._active.discard(order_id)
            return
        self._adopt(order)

    def _measure(self, before: Order, event: OrderEvent) -> None:
        assert self._metrics is not None
        m, status = self._metrics, event.status.value
        m.events.labels(status).inc()
        m.stage_seconds.labels(status).observe(max(0.0, event.ts - before.updated_at))
        if event.status in TERMINAL:
            code = event.data.get("error", {}).get("code", "") if event.data else ""
            m.finished.labels(status, code).inc()
            m.order_seconds.labels(status).observe(max(0.0, event.ts - before.created_at))

    def _spawn(
        self,
        tasks: set[asyncio.Task[None]],
        coro: Coroutine[Any, Any, None],
        name: str,
        run: _Run | None = None,
    ) -> None:
        task = asyncio.create_task(self._guard(coro, name, run), name=name)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        # A task cancelled before its first step never starts `coro`: close it quietly.
        task.add_done_callback(lambda _: coro.close())

    async def _guard(self, coro: Coroutine[Any, Any, None], name: str, run: _Run | None) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except (OrderLost, StoreError) as exc:
            if run is None:
                raise
            self._resume_from_store(run, exc)
        except Exception as exc:
            if run is not None:
                log.exception("%s: unexpected error", name)
                self._resume_from_store(run, exc)
                return
            log.exception("%s: unexpected error; the order is resumed at next start", name)

    # -- presentation -------------------------------------------------------------------

    def _building_data(self, run: _Run, route: Route, floor: int) -> dict[str, Any]:
        out = run.token_out
        data: dict[str, Any] = {
            "dex": route.dex,
            "quotes": [_quote_json(q, out) for q in route.quotes],
            "expectedAmountOut": out.format(route.amount_out),
            "minAmountOut": out.format(floor),
            "wrapSol": run.token_in.native,
            "unwrapSol": run.token_out.native,
            "reason": route.reason,
        }
        if route.skipped:
            data["skipped"] = [{"dex": name, "code": code} for name, code in route.skipped]
        if route.split:
            total = sum(leg.amount_in for leg in route.legs)
            data["legs"] = [
                {
                    "dex": leg.venue,
                    "share": leg.amount_in / total,
                    "amountIn": run.token_in.format(leg.amount_in),
                    "amountOut": out.format(leg.amount_out),
                }
                for leg in route.legs
            ]
        return data

    def _log_decision(self, run: _Run, route: Route) -> None:
        if self._metrics is not None:
            self._metrics.venue_wins.labels(route.dex, str(route.split).lower()).inc()
            if len(route.quotes) > 1:
                spread = gain_bps(route.quotes[0].amount_out, route.quotes[1].amount_out)
                self._metrics.quote_spread_bps.observe(spread)
        out = run.token_out
        quotes = ", ".join(f"{q.venue} {out.format(q.amount_out)}" for q in route.quotes)
        skipped = "".join(f", {name} skipped ({code})" for name, code in route.skipped)
        log.info(
            "[%s] routing %s %s -> %s: %s%s => %s (%s)",
            run.order.order_id,
            run.token_in.format(run.order.amount),
            run.token_in.symbol,
            out.symbol,
            quotes,
            skipped,
            route.dex,
            route.reason,
        )


def _quote_json(q: Quote, out: Token) -> dict[str, Any]:
    return {
        "dex": q.venue,
        "amountOut": out.format(q.amount_out),
        "price": q.price,
        "feeBps": round(q.fee_bps, 2),
        "priceImpactBps": round(q.price_impact_bps, 2),
    }


def _apply(order: Order, event: OrderEvent, update: OrderUpdate) -> Order:
    changes = {k: v for k, v in _update_fields(update).items() if v is not None}
    return replace(order, status=event.status, last_seq=event.seq, updated_at=event.ts, **changes)


def _update_fields(update: OrderUpdate) -> dict[str, Any]:
    return {f.name: getattr(update, f.name) for f in fields(update)}


__all__ = ["TERMINAL", "Engine", "EngineUnavailable", "OrderRequest", "min_out"]

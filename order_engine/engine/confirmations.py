"""Sending an order's transaction and waiting until the chain settles it.

A worker hands an order over once it is built; the wait runs in a task of its own, so a
worker never idles on the chain (confirmations are pipelined). `max_in_flight` caps the
transactions in flight: a slot is taken before the transaction is built and given back
when the wait for it ends, however it ends, exactly once (`Slots`).

A transaction's fate is never guessed: a pending one is waited for until the chain settles
it, and an unseen one is looked for again until its blockhash expires (whoever sent it, a
replica that lost the order perhaps, may have it on its way). Only then is it retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from order_engine.config import EngineSettings
from order_engine.orders import OrderUpdate, Status
from order_engine.payloads import SubmittedData
from order_engine.routing import Route
from order_engine.venues.base import (
    TX_UNKNOWN,
    Chain,
    Receipt,
    TransientVenueError,
    Tx,
    TxState,
    VenueError,
)

from .recorder import Recorder
from .reports import confirmed_data
from .retries import Retries
from .run import OrderRun
from .supervision import ErrorHandler, Supervisor

log = logging.getLogger("order_engine.engine")
_T = TypeVar("_T")

CONFIRMATIONS = "confirmations"  # the supervisor's group of waits on the chain
# How often an unseen transaction is looked for again until its blockhash expires: a slot.
UNSEEN_RECHECK_S = 0.4


class Slot:
    """One transaction in flight. Whoever holds it gives it back, once."""

    __slots__ = ("_held", "_slots")

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._slots.give_back()

    def hand_over(self, task: asyncio.Task[None]) -> None:
        """The task holds the slot now: it is given back when the task ends, even if the
        task is cancelled before it ever ran."""
        self._held = False
        slot = Slot(self._slots)
        task.add_done_callback(lambda _: slot.give_back())


class Slots:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Bounded: giving back a slot that was never taken is a bug, and must not raise
        # the cap silently.
        self._semaphore = asyncio.BoundedSemaphore(capacity)
        self.taken = 0

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Slot]:
        """A slot for the block; given back at its end unless handed over to a task."""
        await self._semaphore.acquire()
        self.taken += 1
        slot = Slot(self)
        try:
            yield slot
        finally:
            slot.give_back()

    def give_back(self) -> None:
        self._semaphore.release()
        self.taken -= 1

    def full(self) -> bool:
        """No slot can be taken now: a sender would wait."""
        return self._semaphore.locked()


class Confirmations:
    def __init__(
        self,
        *,
        chain: Chain,
        settings: EngineSettings,
        recorder: Recorder,
        retries: Retries,
        supervisor: Supervisor,
        on_error: Callable[[OrderRun], ErrorHandler],
    ) -> None:
        self._chain = chain
        self._settings = settings
        self._recorder = recorder
        self._retries = retries
        self._supervisor = supervisor
        self._on_error = on_error
        self.slots = Slots(settings.max_in_flight)

    async def send(self, run: OrderRun, route: Route, floor: int) -> None:
        """Build the order's transaction, then record, send and wait for it off this task:
        the worker goes on to the next order while this one's write reaches the disk."""
        if self.slots.full():
            # The wait for a slot may be long: what the order went through so far is
            # written now, for its watchers to see, not kept until the slot comes.
            await self._recorder.flush(run)
        async with self.slots.hold() as slot:
            try:
                tx = await self._chain.build(route.legs, floor)
            except VenueError as exc:
                failure = exc
            else:
                slot.hand_over(self._spawn(run, self._submit(run, route, tx)))
                return
        # Nothing was signed or sent: trying again is safe (and needs no slot).
        await self._retries.retry_or_fail(run, failure)

    async def _submit(self, run: OrderRun, route: Route, tx: Tx) -> None:
        # The signature is stored BEFORE the transaction is sent: after a crash the engine
        # can always ask the chain what became of it. The stages staged before it (routing,
        # building) are written in the same commit.
        await self._recorder.emit(
            run,
            Status.SUBMITTED,
            f"Transaction sent to {route.venue}",
            SubmittedData(
                dex=route.venue, tx_hash=tx.signature, last_valid_slot=tx.last_valid_slot
            ),
            OrderUpdate(tx_hash=tx.signature, last_valid_slot=tx.last_valid_slot),
        )
        try:
            await self._chain.submit(tx)
        except VenueError as exc:
            # Sent or not, the chain will say: the wait asks by signature.
            log.warning("[%s] submit error (%s); asking the chain", run.order_id, exc.code)
        await self._settle(run)

    def wait(self, run: OrderRun) -> asyncio.Task[None]:
        """Wait in a task of its own until the chain settles the order's transaction."""
        return self._spawn(run, self._settle(run))

    def _spawn(self, run: OrderRun, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._supervisor.spawn(
            CONFIRMATIONS, work, f"confirm-{run.order_id}", on_error=self._on_error(run)
        )

    async def _settle(self, run: OrderRun) -> None:
        signature = run.order.tx_hash
        assert signature is not None, "a submitted order has a signature"
        timeout = self._settings.confirm_timeout_ms / 1000
        while True:
            status = await self._patiently(run, lambda: self._chain.wait(signature, timeout))
            if status.state is TxState.PENDING:
                # A transaction still pending may yet land; deciding now could execute the
                # order twice: wait until the chain settles it (blockhash expiry).
                log.warning("[%s] %s still pending after %.0fs", run.order_id, signature, timeout)
                continue
            if status.state is TxState.UNKNOWN and await self._may_arrive(run, signature):
                await asyncio.sleep(UNSEEN_RECHECK_S)
                continue
            break
        if status.state is TxState.LANDED:
            assert status.receipt is not None
            await self._confirmed(run, status.receipt)
        elif status.state is TxState.FAILED:
            assert status.error is not None
            await self._retries.retry_or_fail(run, status.error)
        else:
            # The chain never saw it: the crash came between storing and sending.
            await self._retries.retry_or_fail(
                run, TransientVenueError(TX_UNKNOWN, "the chain never received the transaction")
            )

    async def _may_arrive(self, run: OrderRun, signature: str) -> bool:
        last_valid_slot = run.order.last_valid_slot
        if last_valid_slot is None:
            return False  # sent before slots were recorded: the chain's "unknown" stands
        return await self._patiently(
            run, lambda: self._chain.can_still_land(signature, last_valid_slot)
        )

    async def _patiently(self, run: OrderRun, ask: Callable[[], Awaitable[_T]]) -> _T:
        """Ask the chain; while it cannot answer, ask again, backing off."""
        delay = self._settings.retry_base_ms / 1000
        while True:
            try:
                return await ask()
            except VenueError as exc:
                log.warning("[%s] cannot ask the chain (%s); asking again", run.order_id, exc.code)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.retry_max_ms / 1000)

    async def _confirmed(self, run: OrderRun, receipt: Receipt) -> None:
        price = float(
            run.token_out.to_ui(receipt.amount_out) / run.token_in.to_ui(receipt.amount_in)
        )
        venue = run.order.dex or max(receipt.legs, key=lambda leg: leg.amount_in).venue
        data = confirmed_data(run, receipt, venue, price)
        await self._recorder.emit(
            run,
            Status.CONFIRMED,
            f"Swapped {data.amount_in} {run.token_in.symbol} for {data.amount_out} "
            f"{run.token_out.symbol} on {venue}",
            data,
            OrderUpdate(executed_price=price, amount_out=receipt.amount_out),
        )

"""The retry policy: a transient failure goes back to routing after a jittered backoff (a
limit or sniper order is armed again instead, held off as long); a permanent one, or a
market order's last attempt's, fails the order."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from order_engine.config import EngineSettings
from order_engine.orders import OrderType, OrderUpdate, Status
from order_engine.payloads import ErrorInfo, FailedData
from order_engine.venues.base import VenueError

from .recorder import Recorder
from .run import OrderRun
from .supervision import ErrorHandler, Supervisor

log = logging.getLogger("order_engine.engine")

RETRIES = "retries"  # the supervisor's group of tasks waiting to queue an order again


class Retries:
    def __init__(
        self,
        *,
        settings: EngineSettings,
        recorder: Recorder,
        supervisor: Supervisor,
        requeue: Callable[[OrderRun], Awaitable[None]],
        rearm: Callable[[OrderRun, VenueError], Awaitable[None]],
        on_error: Callable[[OrderRun], ErrorHandler],
        rng: random.Random,
    ) -> None:
        """`rearm` waits for a fired limit order's trigger again."""
        self._settings = settings
        self._rearm = rearm
        self._recorder = recorder
        self._supervisor = supervisor
        self._requeue = requeue
        self._on_error = on_error
        self._rng = rng

    async def retry_or_fail(self, run: OrderRun, error: VenueError) -> None:
        # The attempt that failed is written as it went (its staged stages) first: what
        # follows counts its attempts from it, and it comes before the wait for the next.
        await self._recorder.flush(run)
        if error.transient and run.order.order_type is not OrderType.MARKET:
            # The market it fired on has moved: it fires again when the price is there,
            # however many times, until it expires.
            await self._rearm(run, error)
            return
        attempt = max(run.order.attempts, 1)
        if not error.transient or attempt >= self._settings.max_attempts:
            await self.fail(run, error)
            return
        delay = self.backoff(attempt)
        log.info(
            "[%s] attempt %d failed (%s: %s); retrying in %.0f ms",
            run.order_id,
            attempt,
            error.code,
            error.message,
            delay * 1000,
        )
        run.retry_reason = error
        self.requeue_after(run, delay)

    def backoff(self, attempt: int) -> float:
        """Exponential with full jitter: spreads retries of orders that failed together."""
        ceiling = min(
            self._settings.retry_max_ms, self._settings.retry_base_ms * 2 ** (attempt - 1)
        )
        return self._rng.uniform(ceiling / 2, ceiling) / 1000

    def requeue_after(self, run: OrderRun, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            await self._requeue(run)

        self._supervisor.spawn(
            RETRIES, later(), f"retry-{run.order_id}", on_error=self._on_error(run)
        )

    async def fail(self, run: OrderRun, error: VenueError) -> None:
        attempts = max(run.order.attempts, 1)
        log.info("[%s] failed: %s: %s", run.order_id, error.code, error.message)
        await self._recorder.emit(
            run,
            Status.FAILED,
            f"Order failed: {error.message}",
            FailedData(error=ErrorInfo(code=error.code, message=error.message), attempts=attempts),
            OrderUpdate(error_code=error.code, error_message=error.message),
        )

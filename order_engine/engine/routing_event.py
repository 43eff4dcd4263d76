"""The routing event that begins each attempt at an order: which attempt it is, why the
last one failed, what fired it, and where its quotes come from.

A worker writes it before routing a new order or a retry; `ArmedOrders` writes it as soon
as a trigger fires, so the event records the trigger's moment, not a free worker's.
"""

from __future__ import annotations

from order_engine.config import EngineSettings
from order_engine.market import MarketData
from order_engine.orders import OrderType, OrderUpdate, Status
from order_engine.payloads import ErrorInfo, RoutingData

from .recorder import Recorder
from .run import OrderRun


class RoutingEvents:
    def __init__(
        self,
        *,
        recorder: Recorder,
        settings: EngineSettings,
        market_data: MarketData | None,
        quote_from_stream: bool,
    ) -> None:
        """`market_data`, `quote_from_stream`: as the router quotes, so the event says
        whether this attempt's quotes come from the stream or from the venues' RPC."""
        self._recorder = recorder
        self._settings = settings
        self._market_data = market_data
        self._quote_from_stream = quote_from_stream

    async def record(self, run: OrderRun, *, may_stage: bool = False) -> None:
        """The routing stage begins: a new attempt, a retry, or a fired trigger. With
        `may_stage` (a worker about to route), an attempt quoted from the streamed pools
        (microseconds) is staged: written with the order's next event. One quoted by venue
        calls is written now: its watchers see it while the calls take their time."""
        attempt = next_attempt(run)
        reason = run.retry_reason
        retry_reason = (
            None if reason is None else ErrorInfo(code=reason.code, message=reason.message)
        )
        trigger, run.trigger = run.trigger, None
        message = "Comparing prices on Raydium and Meteora"
        if trigger is not None and run.order.order_type is OrderType.SNIPER:
            message = f"{run.token_out.symbol} trades at slot {trigger.slot}: routing"
        elif trigger is not None:
            message = f"Limit price reached at slot {trigger.slot}: routing"
        elif attempt > 1 and run.order.order_type is OrderType.MARKET:
            message = f"Retrying (attempt {attempt} of {self._settings.max_attempts})"
        source = self._quote_source()
        data = RoutingData(
            attempt=attempt, retry_reason=retry_reason, quote_source=source, trigger=trigger
        )
        update = OrderUpdate(attempts=attempt)
        if may_stage and source == "stream":
            self._recorder.stage(run, Status.ROUTING, message, data, update)
            # The attempt has begun: what ended the last one is in its routing event now.
            run.retry_reason = None
        else:
            await self._recorder.emit(run, Status.ROUTING, message, data, update)

    def _quote_source(self) -> str:
        data = self._market_data
        streamed = self._quote_from_stream and data is not None and data.fresh()
        return "stream" if streamed else "rpc"


def next_attempt(run: OrderRun) -> int:
    """Pending starts attempt 1; a retry is the next attempt; an order resumed after a
    crash mid-attempt continues that attempt (a crash is not the venue's failure)."""
    if run.status is Status.PENDING:
        return 1
    if run.retry_reason is not None or run.status is Status.OPEN:
        return run.order.attempts + 1
    return max(run.order.attempts, 1)

"""A venue as the router sees it: quoted from the streamed pools while the view is fresh,
and by the venue's own quote call (with its latency) while it is not."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from order_engine.market.data import MarketData
from order_engine.venues.base import Quote, Venue
from order_engine.venues.tokens import Token
from order_engine.venues.venue import SimulatedVenue

STREAM = "stream"
RPC = "rpc"


class StreamedVenue:
    def __init__(
        self,
        rpc: Venue,
        data: MarketData,
        *,
        counted: Callable[[str, str], None] | None = None,
    ) -> None:
        """`counted(venue, source)` is told of every quote request (metrics)."""
        self.name = rpc.name
        self._rpc = rpc
        self._data = data
        self._counted = counted

    def source(self) -> str:
        return STREAM if self._data.fresh() and self._data.venue(self.name) else RPC

    async def quote(self, token_in: Token, token_out: Token, amount_in: int) -> Quote:
        local = self._local()
        if local is None:
            self._count(RPC)
            return await self._rpc.quote(token_in, token_out, amount_in)
        self._count(STREAM)
        # The mirrors have no latency and no faults: no round trip to simulate.
        return local.best_quote(token_in, token_out, amount_in, source=STREAM, slot=self._data.slot)

    async def quote_curve(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None]:
        local = self._local()
        if local is None:
            self._count(RPC)
            return await self._rpc.quote_curve(token_in, token_out, amounts_in)
        self._count(STREAM)
        return local.curve(token_in, token_out, amounts_in, source=STREAM, slot=self._data.slot)

    def curve_now(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None] | None:
        """The curve from the streamed pools, computed here and now; None while the view is
        not fresh (the caller then asks `quote_curve`, which goes to the venue)."""
        local = self._local()
        if local is None:
            return None
        self._count(STREAM)
        return local.curve(token_in, token_out, amounts_in, source=STREAM, slot=self._data.slot)

    def _local(self) -> SimulatedVenue | None:
        return self._data.venue(self.name) if self._data.fresh() else None

    def _count(self, source: str) -> None:
        if self._counted is not None:
            self._counted(self.name, source)

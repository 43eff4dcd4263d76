"""Moving the simulated market as other traders would."""

from __future__ import annotations

from order_engine.venues import SimulatedMarket
from order_engine.venues.base import PermanentVenueError, TxState
from order_engine.venues.tokens import Token


async def land_swap(
    market: SimulatedMarket,
    venue: str,
    token_in: Token,
    token_out: Token,
    amount: int,
    timeout: float = 5.0,
) -> None:
    """A swap at the venue's best route lands through the chain (none if it has no route)."""
    try:
        quote = market.venues[venue].best_quote(token_in, token_out, amount)
    except PermanentVenueError:
        return
    tx = await market.chain.build([quote], min_out=0)
    await market.chain.submit(tx)
    assert (await market.chain.wait(tx.signature, timeout=timeout)).state is not TxState.PENDING

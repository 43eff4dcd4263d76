"""What a pool is to a venue: it prices a swap (pure) and executes one (mutating).

Amounts are integers in base units and every rounding favours the pool, as on chain, so a
trader can never extract value from rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Fill:
    amount_in: int  # taken from the trader, fee included
    amount_out: int  # paid to the trader
    fee: int  # part of amount_in kept as fee (in the input token)
    spot_price: float  # output per input (base units) before the swap, fee excluded

    @property
    def price_impact_bps(self) -> float:
        """How far the fee-free execution price fell below the pre-trade spot price."""
        net = self.amount_in - self.fee
        if net <= 0 or self.spot_price <= 0:
            return 0.0
        return max(0.0, (1 - (self.amount_out / net) / self.spot_price) * 10_000)


class PoolExhausted(Exception):
    """The pool's liquidity cannot fill the whole amount."""


class DustAmount(Exception):
    """The input is too small to buy a single base unit of the output."""


class Pool(Protocol):
    pool_id: str
    token_x: str  # symbols; pools hold wSOL, never native SOL
    token_y: str

    def quote(self, token_in: str, amount_in: int, now: float) -> Fill:
        """Price an exact-in swap without changing the pool. Raises PoolExhausted or DustAmount."""
        ...

    def swap(self, token_in: str, amount_in: int, now: float) -> Fill:
        """Execute an exact-in swap: reserves (and fee state) move. Same errors as `quote`."""
        ...

    def spot_price(self) -> float:
        """Marginal price of x in y (base units), fee excluded."""
        ...

    def trade_towards(self, target_price: float, now: float) -> None:
        """Trade as an arbitrageur would until the spot price is near `target_price`."""
        ...

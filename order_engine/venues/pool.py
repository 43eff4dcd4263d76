"""What a pool is to a venue: it prices a swap (pure) and executes one (mutating).

Amounts are integers in base units and every rounding favours the pool, as on chain, so a
trader can never extract value from rounding.

A pool also describes itself, as an account on chain would: `state()` is everything it is,
as plain JSON values, `pool_from_state` builds an exact copy from it, and `take_changes()`
says what moved since it was last asked, for the copy's `apply_state`. A copy kept current
that way quotes exactly as the pool does. `take_unsaved()` is the same for the chain's state
file, tracked apart: what one of them takes, the other still gets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec


class Fill(msgspec.Struct, frozen=True):
    """What a swap (or its quote) through one pool fills; a struct built in C, as a quote
    makes one per pool it crosses."""

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

    def least_fee(self) -> float:
        """The smallest share of its input any swap pays as fee now (dynamic fees only
        add to it)."""
        ...

    def trade_towards(self, target_price: float, now: float) -> None:
        """Trade as an arbitrageur would until the spot price is near `target_price`."""
        ...

    def state(self) -> dict[str, Any]:
        """The whole state as JSON values (str, int, float, bool, list, dict); names its
        `kind`, so that `pool_from_state` can rebuild the pool exactly."""
        ...

    def apply_state(self, state: Mapping[str, Any]) -> None:
        """Become what a whole `state()` or a delta from `take_changes()` describes."""
        ...

    def take_changes(self) -> dict[str, Any] | None:
        """What changed since the last call, as `apply_state` takes it; None if nothing."""
        ...

    def take_unsaved(self) -> tuple[dict[str, Any], bool]:
        """For the chain's state file: (`state()`, True) the first time (or after a whole
        `apply_state`), and from then on (state, False), a state whose "bins", if the pool
        has bins, lists only those written since the last call; everything else whole."""
        ...

    def mark_saved(self) -> None:
        """The pool is as the state file holds it (restored from it): `take_unsaved` gives
        only what changes from now on."""
        ...


def pool_from_state(state: Mapping[str, Any]) -> Pool:
    """The pool a whole `state()` describes."""
    # Imported here: both pool modules import this one.
    from order_engine.venues import cpmm, dlmm

    kind = state.get("kind")
    if kind == cpmm.KIND:
        return cpmm.ConstantProductPool.from_state(state)
    if kind == dlmm.KIND:
        return dlmm.DlmmPool.from_state(state)
    raise ValueError(f"no pool of kind {kind!r}")

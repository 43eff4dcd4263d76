"""Raydium's constant-product pool (CPMM), integer math exactly as raydium-cp-swap does it.

A swap takes the trade fee from the input, rounded up: `fee = ⌈in·f⌉`, `in' = in − fee`, and
floors the output: `out = ⌊y·in' / (x + in')⌋` (`CurveCalculator::swap_base_input` with
`Fees::trading_fee` and `ConstantProductCurve::swap_base_input_without_fees`). The protocol
and the fund each own a share of that fee, floored (`Fees::protocol_fee`, `Fees::fund_fee`):
it stays in the vault until collected but is not liquidity, so the reserves that price a
swap are the vaults less those accrued fees (`PoolState::vault_amount_without_fee`). The
rest of the fee stays with the liquidity providers, so `k` of those reserves never decreases.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

from order_engine.venues.pool import DustAmount, Fill

FEE_DENOMINATOR = 1_000_000
# The standard AmmConfig (index 0): a 25 bps trade fee, of which 12 % goes to the protocol
# and 4 % to the fund (both rates per 10⁶ of the trade fee).
TRADE_FEE_RATE = 2_500
PROTOCOL_FEE_RATE = 120_000
FUND_FEE_RATE = 40_000

KIND = "cpmm"
# What a swap changes and what prices one: the whole state, small enough to send whole.
STATE_FIELDS = (
    "vault_x",
    "vault_y",
    "protocol_fees_x",
    "protocol_fees_y",
    "fund_fees_x",
    "fund_fees_y",
    "fee_rate",
    "protocol_fee_rate",
    "fund_fee_rate",
)


def cp_amount_out(
    reserve_in: int, reserve_out: int, amount_in: int, fee_rate: int
) -> tuple[int, int]:
    """(amount_out, trade fee) of an exact-in swap against reserves."""
    if amount_in <= 0:
        raise ValueError("amount_in must be positive")
    fee = -(-amount_in * fee_rate // FEE_DENOMINATOR)  # ceil
    net = amount_in - fee
    return reserve_out * net // (reserve_in + net), fee


def fee_shares(trade_fee: int, protocol_fee_rate: int, fund_fee_rate: int) -> tuple[int, int]:
    """(protocol fee, fund fee): the parts of a trade fee that leave the pricing reserves."""
    return (
        trade_fee * protocol_fee_rate // FEE_DENOMINATOR,
        trade_fee * fund_fee_rate // FEE_DENOMINATOR,
    )


class ConstantProductPool:
    def __init__(
        self,
        pool_id: str,
        token_x: str,
        token_y: str,
        reserve_x: int,
        reserve_y: int,
        fee_rate: int = TRADE_FEE_RATE,
        *,
        protocol_fee_rate: int = PROTOCOL_FEE_RATE,
        fund_fee_rate: int = FUND_FEE_RATE,
    ) -> None:
        if reserve_x <= 0 or reserve_y <= 0:
            raise ValueError("reserves must be positive")
        if protocol_fee_rate + fund_fee_rate > FEE_DENOMINATOR:
            raise ValueError("the protocol and fund shares cannot exceed the whole trade fee")
        self.pool_id = pool_id
        self.token_x = token_x
        self.token_y = token_y
        self.vault_x = reserve_x
        self.vault_y = reserve_y
        self.protocol_fees_x = self.protocol_fees_y = 0
        self.fund_fees_x = self.fund_fees_y = 0
        self.fee_rate = fee_rate
        self.protocol_fee_rate = protocol_fee_rate
        self.fund_fee_rate = fund_fee_rate
        self._changed = False

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ConstantProductPool:
        pool = cls(state["pool_id"], state["token_x"], state["token_y"], 1, 1)
        pool.apply_state(state)
        return pool

    @property
    def reserve_x(self) -> int:
        return self.vault_x - self.protocol_fees_x - self.fund_fees_x

    @property
    def reserve_y(self) -> int:
        return self.vault_y - self.protocol_fees_y - self.fund_fees_y

    @property
    def k(self) -> int:
        return self.reserve_x * self.reserve_y

    def spot_price(self) -> float:
        return self.reserve_y / self.reserve_x

    def least_fee(self) -> float:
        return self.fee_rate / FEE_DENOMINATOR

    def quote(self, token_in: str, amount_in: int, now: float = 0.0) -> Fill:
        x_in = self._x_in(token_in)
        r_in, r_out = (self.reserve_x, self.reserve_y) if x_in else (self.reserve_y, self.reserve_x)
        out, fee = cp_amount_out(r_in, r_out, amount_in, self.fee_rate)
        if out <= 0:
            raise DustAmount(f"{amount_in} is too small to buy one base unit")
        return Fill(amount_in, out, fee, r_out / r_in)

    def swap(self, token_in: str, amount_in: int, now: float = 0.0) -> Fill:
        fill = self.quote(token_in, amount_in, now)
        protocol, fund = fee_shares(fill.fee, self.protocol_fee_rate, self.fund_fee_rate)
        if self._x_in(token_in):
            self.vault_x += fill.amount_in
            self.vault_y -= fill.amount_out
            self.protocol_fees_x += protocol
            self.fund_fees_x += fund
        else:
            self.vault_y += fill.amount_in
            self.vault_x -= fill.amount_out
            self.protocol_fees_y += protocol
            self.fund_fees_y += fund
        self._changed = True
        return fill

    def trade_towards(self, target_price: float, now: float = 0.0) -> None:
        # At price p = y/x with k fixed, x = sqrt(k/p); the fee-inclusive input that gets
        # there is the gap divided by (1 - f).
        keep = 1 - self.fee_rate / FEE_DENOMINATOR
        target_x = math.sqrt(self.k / target_price)
        if target_x > self.reserve_x:
            amount = int((target_x - self.reserve_x) / keep)
            if amount > 0:
                self._try_swap(self.token_x, amount)
        else:
            target_y = math.sqrt(self.k * target_price)
            amount = int((target_y - self.reserve_y) / keep)
            if amount > 0:
                self._try_swap(self.token_y, amount)

    # -- state, for copies of this pool kept elsewhere (the account feed) ------------------

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "kind": KIND,
            "pool_id": self.pool_id,
            "token_x": self.token_x,
            "token_y": self.token_y,
        }
        for name in STATE_FIELDS:
            state[name] = getattr(self, name)
        return state

    def apply_state(self, state: Mapping[str, Any]) -> None:
        """Take what `state` or `take_changes` gave (the same thing: the state is tiny)."""
        if state.get("pool_id", self.pool_id) != self.pool_id:
            raise ValueError(f"the state of {state['pool_id']} does not apply to {self.pool_id}")
        for name in STATE_FIELDS:
            if name in state:
                setattr(self, name, int(state[name]))
        self._changed = False  # a copy follows: what it applies is not a change of its own

    def take_changes(self) -> dict[str, Any] | None:
        if not self._changed:
            return None
        self._changed = False
        return self.state()

    def take_unsaved(self) -> tuple[dict[str, Any], bool]:
        return self.state(), True  # no bins: the whole state is a few numbers

    def mark_saved(self) -> None:
        pass

    def _try_swap(self, token_in: str, amount: int) -> None:
        with contextlib.suppress(DustAmount):  # a nudge too small to trade: the price stays
            self.swap(token_in, amount)

    def _x_in(self, token_in: str) -> bool:
        if token_in == self.token_x:
            return True
        if token_in == self.token_y:
            return False
        raise ValueError(f"{token_in} is not in pool {self.pool_id}")

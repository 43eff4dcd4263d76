"""Raydium's constant-product pool (CPMM), integer math exactly as the program does it.

The fee is taken from the input, rounded up: `fee = ⌈in·f⌉`, `in' = in − fee`, and the
output is floored: `out = ⌊y·in' / (x + in')⌋`. The whole input, fee included, stays in the
pool, so `k = x·y` never decreases.
"""

from __future__ import annotations

import contextlib
import math

from order_engine.venues.pool import DustAmount, Fill

FEE_DENOMINATOR = 1_000_000
RAYDIUM_FEE_RATE = 2_500  # 25 bps, the CPMM's standard fee tier


def cp_amount_out(
    reserve_in: int, reserve_out: int, amount_in: int, fee_rate: int
) -> tuple[int, int]:
    """(amount_out, fee) of an exact-in swap against reserves."""
    if amount_in <= 0:
        raise ValueError("amount_in must be positive")
    fee = -(-amount_in * fee_rate // FEE_DENOMINATOR)  # ceil
    net = amount_in - fee
    return reserve_out * net // (reserve_in + net), fee


class ConstantProductPool:
    def __init__(
        self,
        pool_id: str,
        token_x: str,
        token_y: str,
        reserve_x: int,
        reserve_y: int,
        fee_rate: int = RAYDIUM_FEE_RATE,
    ) -> None:
        if reserve_x <= 0 or reserve_y <= 0:
            raise ValueError("reserves must be positive")
        self.pool_id = pool_id
        self.token_x = token_x
        self.token_y = token_y
        self.reserve_x = reserve_x
        self.reserve_y = reserve_y
        self.fee_rate = fee_rate

    @property
    def k(self) -> int:
        return self.reserve_x * self.reserve_y

    def spot_price(self) -> float:
        return self.reserve_y / self.reserve_x

    def quote(self, token_in: str, amount_in: int, now: float = 0.0) -> Fill:
        x_in = self._x_in(token_in)
        r_in, r_out = (self.reserve_x, self.reserve_y) if x_in else (self.reserve_y, self.reserve_x)
        out, fee = cp_amount_out(r_in, r_out, amount_in, self.fee_rate)
        if out <= 0:
            raise DustAmount(f"{amount_in} is too small to buy one base unit")
        return Fill(amount_in, out, fee, r_out / r_in)

    def swap(self, token_in: str, amount_in: int, now: float = 0.0) -> Fill:
        fill = self.quote(token_in, amount_in, now)
        if self._x_in(token_in):
            self.reserve_x += fill.amount_in
            self.reserve_y -= fill.amount_out
        else:
            self.reserve_y += fill.amount_in
            self.reserve_x -= fill.amount_out
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

    def _try_swap(self, token_in: str, amount: int) -> None:
        with contextlib.suppress(DustAmount):  # a nudge too small to trade: the price stays
            self.swap(token_in, amount)

    def _x_in(self, token_in: str) -> bool:
        if token_in == self.token_x:
            return True
        if token_in == self.token_y:
            return False
        raise ValueError(f"{token_in} is not in pool {self.pool_id}")

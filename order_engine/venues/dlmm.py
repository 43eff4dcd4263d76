"""Meteora's DLMM pool: liquidity in discrete price bins, each a constant-sum market.

Bin `i` trades at `p_i = (1 + bin_step/10⁴)^i` (y base units per x base unit, Q64.64 as on
chain). Bins below the active one hold only y, bins above only x, the active bin both. A swap
drains the active bin at its fixed price and moves to the next bin only while input remains,
so a swap that empties a bin exactly leaves it active (`quote_exact_in` and `Bin::swap` of
Meteora's dlmm-sdk). Each bin crossed charges `base fee + variable fee`, where the variable
fee grows with the volatility accumulator: how many bins the price moved recently (reference
decays over time). Fees are not liquidity: the bin takes the input less its fee, and the fee
accrues to the pool (`fees_x`, `fees_y`; on chain, to positions and the protocol).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from decimal import Decimal, localcontext
from typing import Any

from order_engine.venues.pool import DustAmount, Fill, PoolExhausted

FEE_DENOMINATOR = 1_000_000_000
MAX_FEE_RATE = 100_000_000  # 10 %
BASIS_POINT_MAX = 10_000
ONE_Q64 = 1 << 64

KIND = "dlmm"
# Set when the pool is made; a whole state carries them, a delta does not.
_PARAMS = (
    "bin_step",
    "base_factor",
    "variable_fee_control",
    "max_volatility_accumulator",
    "filter_period",
    "decay_period",
    "reduction_factor",
    "min_id",
    "max_id",
)
# What every swap may change besides its bins (and `last_update`, encoded apart).
_HEADER = (
    "active_id",
    "volatility_accumulator",
    "volatility_reference",
    "index_reference",
    "fees_x",
    "fees_y",
)
NEVER = "-inf"  # JSON has no infinity: `last_update` of a pool that never swapped


def bin_price_q64(bin_id: int, bin_step: int) -> int:
    """`(1 + bin_step/10⁴)^bin_id` in Q64.64, floored."""
    with localcontext() as ctx:
        ctx.prec = 60
        base = Decimal(BASIS_POINT_MAX + bin_step) / BASIS_POINT_MAX
        return int(base**bin_id * ONE_Q64)


def bin_id_for_price(price: float, bin_step: int) -> int:
    return round(math.log(price) / math.log1p(bin_step / BASIS_POINT_MAX))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class DlmmPool:
    def __init__(
        self,
        pool_id: str,
        token_x: str,
        token_y: str,
        *,
        bin_step: int,
        active_id: int,
        bins_each_side: int,
        y_per_bin: int,
        base_factor: int = 10_000,
        variable_fee_control: int = 40_000,
        max_volatility_accumulator: int = 350_000,
        filter_period: float = 30.0,
        decay_period: float = 600.0,
        reduction_factor: int = 5_000,
    ) -> None:
        if bin_step <= 0 or bins_each_side <= 0 or y_per_bin <= 0:
            raise ValueError("bin_step, bins_each_side and y_per_bin must be positive")
        self.pool_id = pool_id
        self.token_x = token_x
        self.token_y = token_y
        self.bin_step = bin_step
        self.base_factor = base_factor
        self.variable_fee_control = variable_fee_control
        self.max_volatility_accumulator = max_volatility_accumulator
        self.filter_period = filter_period
        self.decay_period = decay_period
        self.reduction_factor = reduction_factor
        self.active_id = active_id
        self.min_id = active_id - bins_each_side
        self.max_id = active_id + bins_each_side
        self._prices: dict[int, int] = {}
        # [x, y] per bin; the same value (in y) in every bin, "spot" shape.
        self.bins: dict[int, list[int]] = {}
        for i in range(self.min_id, self.max_id + 1):
            if i < active_id:
                self.bins[i] = [0, y_per_bin]
            elif i > active_id:
                self.bins[i] = [y_per_bin * ONE_Q64 // self.price_q64(i), 0]
            else:
                half = y_per_bin // 2
                self.bins[i] = [half * ONE_Q64 // self.price_q64(i), half]
        self.volatility_accumulator = 0
        self.volatility_reference = 0
        self.index_reference = active_id
        self.last_update = -math.inf
        # In the vault, owed to liquidity providers and the protocol, never traded against.
        self.fees_x = 0
        self.fees_y = 0
        # Since the last `take_changes`: the bins a swap wrote, and whether anything moved.
        self._touched: set[int] = set()
        self._changed = False
        # Since the last `take_unsaved`, for the chain's state file: the bins a swap wrote;
        # None until the pool was saved (or restored) whole, when everything is unsaved.
        self._unsaved_bins: set[int] | None = None

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> DlmmPool:
        pool = cls(
            state["pool_id"],
            state["token_x"],
            state["token_y"],
            bin_step=state["bin_step"],
            active_id=state["active_id"],
            bins_each_side=1,
            y_per_bin=1,
        )
        pool.apply_state(state)
        return pool

    @property
    def base_fee_rate(self) -> int:
        return self.base_factor * self.bin_step * 10

    def price_q64(self, bin_id: int) -> int:
        price = self._prices.get(bin_id)
        if price is None:
            price = self._prices[bin_id] = bin_price_q64(bin_id, self.bin_step)
        return price

    def spot_price(self) -> float:
        return self.price_q64(self.active_id) / ONE_Q64

    def least_fee(self) -> float:
        # The fee is charged on top of what the bins take: fee / input = rate / denominator.
        return self.base_fee_rate / FEE_DENOMINATOR

    def fee_rate(self, volatility_reference: int, index_reference: int, bin_id: int) -> int:
        accumulator = self._accumulator(volatility_reference, index_reference, bin_id)
        variable = (
            (accumulator * self.bin_step) ** 2 * self.variable_fee_control + 99_999_999_999
        ) // 100_000_000_000
        return min(self.base_fee_rate + variable, MAX_FEE_RATE)

    def quote(self, token_in: str, amount_in: int, now: float) -> Fill:
        return self._swap(token_in, amount_in, now, commit=False)

    def swap(self, token_in: str, amount_in: int, now: float) -> Fill:
        return self._swap(token_in, amount_in, now, commit=True)

    def trade_towards(self, target_price: float, now: float) -> None:
        # Stay one bin inside the range so motion alone never empties a side of the pool.
        target = min(
            max(bin_id_for_price(target_price, self.bin_step), self.min_id + 1), self.max_id - 1
        )
        if target < self.active_id:  # sell x: take the y of every bin down to the target
            token, amount = (
                self.token_x,
                sum(
                    _ceil_div(self.bins[i][1] * ONE_Q64, self.price_q64(i))
                    for i in range(target + 1, self.active_id + 1)
                ),
            )
        elif target > self.active_id:  # buy x: take the x of every bin up to the target
            token, amount = (
                self.token_y,
                sum(
                    _ceil_div(self.bins[i][0] * self.price_q64(i), ONE_Q64)
                    for i in range(self.active_id, target)
                ),
            )
        else:
            return
        rate = self.base_fee_rate
        amount += _ceil_div(amount * rate, FEE_DENOMINATOR - rate)
        if amount > 0:
            # An arbitrageur's nudge that does not fit leaves the price where it is.
            with contextlib.suppress(PoolExhausted, DustAmount):
                self.swap(token, amount, now)

    # -- state, for copies of this pool kept elsewhere (the account feed, the chain's file)

    def state(self) -> dict[str, Any]:
        state = self._without_bins()
        state["bins"] = [[i, x, y] for i, (x, y) in sorted(self.bins.items())]
        return state

    def apply_state(self, state: Mapping[str, Any]) -> None:
        """Take a whole state (it names its `kind`) or a delta from `take_changes`: the
        header fields and only the bins it lists."""
        if state.get("pool_id", self.pool_id) != self.pool_id:
            raise ValueError(f"the state of {state['pool_id']} does not apply to {self.pool_id}")
        if "kind" in state:
            if state["kind"] != KIND:
                raise ValueError(f"a {state['kind']} state does not apply to a DLMM pool")
            if state["bin_step"] != self.bin_step:
                self._prices = {}
            for name in _PARAMS:
                setattr(self, name, state[name])
            self.bins = {}
            self._unsaved_bins = None  # not what was saved, if anything was: save it whole
        for name in _HEADER:
            if name in state:
                setattr(self, name, int(state[name]))
        if "last_update" in state:
            when = state["last_update"]
            self.last_update = -math.inf if when == NEVER else float(when)
        for bin_id, x, y in state.get("bins", ()):
            self.bins[int(bin_id)] = [int(x), int(y)]
            if self._unsaved_bins is not None:
                self._unsaved_bins.add(int(bin_id))
        # A copy follows: what it applies is not a change of its own.
        self._touched.clear()
        self._changed = False

    def take_changes(self) -> dict[str, Any] | None:
        if not self._changed:
            return None
        delta = self._header()
        delta["bins"] = [[i, *self.bins[i]] for i in sorted(self._touched)]
        self._touched.clear()
        self._changed = False
        return delta

    def take_unsaved(self) -> tuple[dict[str, Any], bool]:
        unsaved = self._unsaved_bins
        self._unsaved_bins = set()
        if unsaved is None:
            return self.state(), True
        state = self._without_bins()
        state["bins"] = [[i, *self.bins[i]] for i in sorted(unsaved)]
        return state, False

    def mark_saved(self) -> None:
        self._unsaved_bins = set()

    def _without_bins(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "kind": KIND,
            "pool_id": self.pool_id,
            "token_x": self.token_x,
            "token_y": self.token_y,
        }
        for name in _PARAMS:
            state[name] = getattr(self, name)
        state.update(self._header())
        return state

    def _header(self) -> dict[str, Any]:
        header: dict[str, Any] = {name: getattr(self, name) for name in _HEADER}
        header["last_update"] = NEVER if self.last_update == -math.inf else self.last_update
        return header

    def _accumulator(self, volatility_reference: int, index_reference: int, bin_id: int) -> int:
        moved = abs(index_reference - bin_id) * BASIS_POINT_MAX
        return min(volatility_reference + moved, self.max_volatility_accumulator)

    def _references(self, now: float) -> tuple[int, int]:
        """(volatility reference, index reference) for a swap at `now`: a swap soon after
        the last one keeps the references (volatility builds up); after the filter period
        the reference decays, after the decay period it resets."""
        elapsed = now - self.last_update
        if elapsed < self.filter_period:
            return self.volatility_reference, self.index_reference
        if elapsed < self.decay_period:
            decayed = self.volatility_accumulator * self.reduction_factor // BASIS_POINT_MAX
            return decayed, self.active_id
        return 0, self.active_id

    def _swap(self, token_in: str, amount_in: int, now: float, *, commit: bool) -> Fill:
        if amount_in <= 0:
            raise ValueError("amount_in must be positive")
        if token_in == self.token_x:
            for_y = True
        elif token_in == self.token_y:
            for_y = False
        else:
            raise ValueError(f"{token_in} is not in pool {self.pool_id}")
        v_ref, i_ref = self._references(now)
        spot = self.spot_price() if for_y else 1 / self.spot_price()
        active = self.active_id
        touched: dict[int, list[int]] = {}
        remaining, total_out, total_fee = amount_in, 0, 0
        while True:
            if not self.min_id <= active <= self.max_id:
                raise PoolExhausted(f"{self.pool_id} cannot fill {amount_in} {token_in}")
            x, y = touched.get(active) or self.bins[active]
            price = self.price_q64(active)
            available = y if for_y else x
            if available > 0:
                rate = self.fee_rate(v_ref, i_ref, active)
                # Input (fee excluded) that drains the bin, rounded in the pool's favour.
                drain = (
                    _ceil_div(available * ONE_Q64, price)
                    if for_y
                    else _ceil_div(available * price, ONE_Q64)
                )
                drain_fee = _ceil_div(drain * rate, FEE_DENOMINATOR - rate)
                # Strictly more, as `Bin::swap`: input that exactly drains the bin is priced
                # by the partial-fill branch (its fee rounds from the gross amount).
                if remaining > drain + drain_fee:
                    net, fee, out = drain, drain_fee, available
                else:
                    fee = _ceil_div(remaining * rate, FEE_DENOMINATOR)
                    net = remaining - fee
                    out = net * price // ONE_Q64 if for_y else net * ONE_Q64 // price
                    out = min(out, available)
                # Only the input less its fee becomes the bin's liquidity.
                if for_y:
                    touched[active] = [x + net, y - out]
                else:
                    touched[active] = [x - out, y + net]
                remaining -= net + fee
                total_out += out
                total_fee += fee
            if remaining == 0:
                break
            active += -1 if for_y else 1
        if total_out == 0:
            raise DustAmount(f"{amount_in} is too small to buy one base unit")
        if commit:
            self.bins.update(touched)
            self._touched.update(touched)
            if self._unsaved_bins is not None:
                self._unsaved_bins.update(touched)
            self._changed = True
            if for_y:
                self.fees_x += total_fee
            else:
                self.fees_y += total_fee
            self.active_id = active
            self.volatility_reference, self.index_reference = v_ref, i_ref
            self.volatility_accumulator = self._accumulator(v_ref, i_ref, active)
            self.last_update = now
        return Fill(amount_in, total_out, total_fee, spot)

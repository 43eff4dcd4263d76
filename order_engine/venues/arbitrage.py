"""The simulated market's arbitrageurs: they trade a pool only while it pays, as on chain.

Two kinds, as on Solana:
- `align`: one who knows the fair price (price discovery happens on the big centralised
  exchanges, where this trader hedges) and trades a pool back toward it while the next unit
  still pays net of the pool's fee. A pool's price then stays within about its fee of fair,
  and so a venue's pools stay consistent with each other: a route through a third token
  cannot beat a pair's own pool by more than that pool's fee taken both ways.
- `cross`: one who buys on one venue and sells on the other in the same transaction when
  the two prices differ by more than both fees together, until they no longer do.

Both see a pool as any trader does: what a tiny swap each way gets, fees included (a DLMM
pool's variable fee too), and both trade with real swaps, so every move is a trade that the
account feed publishes like any other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import permutations

from order_engine.venues.pool import DustAmount, Pool, PoolExhausted

# A gap this small (relative) is rounding, not an opportunity: no swap for it.
MIN_EDGE = 1e-7
# How close the search of the most profitable size gets, relative to that size.
SEARCH_PRECISION = 1e-6
# A swap found by search can leave a sliver of a bin that still pays; a second look
# takes it, and a third finds nothing.
ALIGN_ROUNDS = 3

# A small amount of a token in base units, for the probing swaps that read a pool's prices.
Probe = Callable[[str], int]


def marginal_rate(pool: Pool, token_in: str, now: float, probe: Probe) -> float | None:
    """What the next unit of `token_in` sold into `pool` gets (output per input, base units,
    its fee included), from a tiny swap; None if that cannot fill."""
    try:
        fill = pool.quote(token_in, probe(token_in), now)
    except (DustAmount, PoolExhausted):
        return None
    return fill.amount_out / fill.amount_in


def align(pool: Pool, fair: float, now: float, probe: Probe) -> bool:
    """Trade `pool` toward `fair` (y per x, base units) while it pays net of its fee: the
    swap that makes the most, valued at fair, so the next unit would get no more than it is
    worth. True if it traded."""
    x, y = pool.token_x, pool.token_y
    traded = False
    for _ in range(ALIGN_ROUNDS):
        sell_x = marginal_rate(pool, x, now, probe)
        sell_y = marginal_rate(pool, y, now, probe)
        if sell_x is None or sell_y is None:
            break
        if sell_x > fair * (1 + MIN_EDGE):
            token_in, worth_in, worth_out = x, fair, 1.0  # in y
        elif sell_y * fair > 1 + MIN_EDGE:
            token_in, worth_in, worth_out = y, 1.0, fair
        else:
            break

        gain = _selling(pool, token_in, worth_in, worth_out, now)
        amount = _most_profitable(gain, probe(token_in))
        if amount <= 0:
            break
        pool.swap(token_in, amount, now)
        traded = True
    return traded


def cross(pools: Sequence[Pool], now: float, probe: Probe) -> list[Pool]:
    """Between pools of the same pair (on different venues): buy a token where it is cheap
    and sell it where it is dear, in one go, for as long as that pays. The pools it traded."""
    x, y = pools[0].token_x, pools[0].token_y
    traded: list[Pool] = []
    for rich, cheap in permutations(pools, 2):
        sell = marginal_rate(rich, x, now, probe)
        buy = marginal_rate(cheap, y, now, probe)
        if sell is None or buy is None or sell * buy <= 1 + MIN_EDGE:
            continue
        amount = _most_profitable(_round_trip(rich, cheap, x, y, now), probe(y))
        if amount > 0:
            bought = cheap.swap(y, amount, now)
            rich.swap(x, bought.amount_out, now)
            traded += [cheap, rich]
    return traded


def _selling(
    pool: Pool, token_in: str, worth_in: float, worth_out: float, now: float
) -> Callable[[int], float]:
    """What selling an amount of `token_in` into `pool` makes, at the given worths."""

    def gain(amount: int) -> float:
        try:
            return pool.quote(token_in, amount, now).amount_out * worth_out - amount * worth_in
        except (DustAmount, PoolExhausted):
            return -math.inf

    return gain


def _round_trip(rich: Pool, cheap: Pool, x: str, y: str, now: float) -> Callable[[int], float]:
    """y left over after paying an amount of y for x in `cheap` and selling that in `rich`."""

    def gain(amount: int) -> float:
        try:
            bought = cheap.quote(y, amount, now).amount_out
            return rich.quote(x, bought, now).amount_out - amount
        except (DustAmount, PoolExhausted):
            return -math.inf

    return gain


def _most_profitable(gain: Callable[[int], float], start: int) -> int:
    """The input that makes the most, 0 if none makes anything. What a swap makes is concave
    in its size (each further unit gets a worse price), so double the size until the gain
    falls, then narrow down by golden section."""
    seen: dict[int, float] = {}

    def made(amount: float) -> float:
        key = round(amount)
        if key not in seen:
            seen[key] = gain(key)
        return seen[key]

    if made(start) <= 0:
        return 0
    low, high = 0.0, float(start)
    while made(2 * high) > made(high):
        low, high = high, 2 * high
    high *= 2
    ratio = (math.sqrt(5) - 1) / 2
    left, right = high - ratio * (high - low), low + ratio * (high - low)
    while high - low > max(2.0, high * SEARCH_PRECISION):
        if made(left) < made(right):
            low, left, right = left, right, left + ratio * (high - left)
        else:
            high, right, left = right, left, right - ratio * (right - low)
    best = max(seen, key=seen.__getitem__)
    return best if seen[best] > 0 else 0

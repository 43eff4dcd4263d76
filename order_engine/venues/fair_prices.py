"""Every token's fair USD price: what the simulated market's arbitrageurs trade its pools
toward, so every pair's fair price agrees with every other's.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal

from order_engine.venues.market_data import DEFAULT_MOTION, MOTION, REFERENCE_USD
from order_engine.venues.tokens import REGISTRY, Token, TokenRegistry


class FairPrices:
    """Every token's fair USD price. Its log distance from the reference follows its own
    Ornstein-Uhlenbeck process (`market_data.MOTION`), stepped exactly over any interval.
    A token launched later is listed at its launch price, which is its reference."""

    def __init__(self, registry: TokenRegistry = REGISTRY) -> None:
        self._registry = registry
        self._reference: dict[str, Decimal] = dict(REFERENCE_USD)  # USD per whole token
        self._bps: dict[str, float] = {}  # log distance from the reference, in bps
        self._pairs: dict[tuple[str, str], float] = {}  # reference prices, base units

    def __contains__(self, token: object) -> bool:
        return token in self._reference

    def add(self, token: str, usd: Decimal) -> None:
        """Price a token from now on (a launch), starting at its reference `usd`."""
        if token in self._reference:
            raise ValueError(f"{token} already has a fair price")
        self._reference[token] = usd

    def usd(self, token: str) -> float:
        return float(self._reference[token]) * math.exp(self._bps.get(token, 0.0) / 10_000)

    def price(self, token_x: str, token_y: str) -> float:
        """Fair price of x in y, in base units (what pools store)."""
        reference = self._pairs.get((token_x, token_y))
        if reference is None:
            reference = self._pairs[token_x, token_y] = self._reference_price(token_x, token_y)
        apart = self._bps.get(token_x, 0.0) - self._bps.get(token_y, 0.0)
        return reference * math.exp(apart / 10_000)

    def ui_price(self, token_x: str, token_y: str) -> float:
        """Fair price of x in y, in whole tokens."""
        x, y = self._token(token_x), self._token(token_y)
        return self.price(token_x, token_y) * 10.0 ** (x.decimals - y.decimals)

    def shift(self, token: str, bps: float) -> None:
        """News: the token's price is `bps` (log) away from where it was; it mean-reverts
        from there as from any other move."""
        self._bps[token] = self._bps.get(token, 0.0) + bps

    def state(self) -> dict[str, float]:
        """Every token's log distance from its reference, in bps (`restore` takes it)."""
        return dict(self._bps)

    def restore(self, bps: dict[str, float]) -> None:
        self._bps = {token: float(value) for token, value in bps.items()}

    def reference_base(self, token: str, usd: Decimal) -> int:
        """Base units of the token `usd` buys at its reference price."""
        return int((usd / self._reference[token]).scaleb(self._token(token).decimals))

    def advance(self, seconds: float, rng: random.Random) -> None:
        for token in self._reference:
            motion = MOTION.get(token, DEFAULT_MOTION)
            # Pull-back rate that keeps the long-run spread at `range_bps`.
            rate = motion.volatility_bps**2 / (2 * motion.range_bps**2)
            keep = math.exp(-rate * seconds)
            shock = motion.range_bps * math.sqrt(1 - keep * keep)
            self._bps[token] = self._bps.get(token, 0.0) * keep + rng.gauss(0, shock)

    def _reference_price(self, token_x: str, token_y: str) -> float:
        x, y = self._token(token_x), self._token(token_y)
        ui = self._reference[token_x] / self._reference[token_y]
        return float(ui.scaleb(y.decimals - x.decimals))

    def _token(self, symbol: str) -> Token:
        return self._registry.resolve(symbol, upcoming=True)

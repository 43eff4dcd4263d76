"""The simulated market's starting point: reference prices, how each token moves, and every
pool, in one place.

Liquidity is of the order of the real pools' (Raydium's constant-product pools a few million
dollars, Meteora's DLMM pools concentrated in bins around the price), so a few-SOL order
barely moves a price while a few-thousand-SOL order pays for its size, and splitting it
across venues pays off.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from order_engine.venues.cpmm import TRADE_FEE_RATE
from order_engine.venues.tokens import REGISTRY

# USD per whole token. SOL trades as wSOL in every pool.
REFERENCE_USD: dict[str, Decimal] = {
    "WSOL": Decimal("150"),
    "USDC": Decimal("1"),
    "USDT": Decimal("1"),
    "BONK": Decimal("0.00002"),
    "JUP": Decimal("0.9"),
    "RAY": Decimal("2"),
}


@dataclass(frozen=True, slots=True)
class Motion:
    """How a token's fair USD price moves: its log follows a random walk pulled gently back
    to the reference (Ornstein-Uhlenbeck), so a long run neither freezes nor wanders off the
    pools' ranges."""

    volatility_bps: float  # std of the log price's move over one second
    range_bps: float  # std of its distance from the reference in the long run


# Per second SOL moves about twice as much as on an exchange, the smaller tokens more (so a
# run of a few hundred steps sees prices move); the stablecoins move by a tenth of a basis
# point and stay within a few bps of the dollar.
MOTION: dict[str, Motion] = {
    "WSOL": Motion(3.0, 150.0),
    "USDC": Motion(0.1, 1.0),
    "USDT": Motion(0.2, 2.0),
    "BONK": Motion(6.0, 400.0),
    "JUP": Motion(4.5, 250.0),
    "RAY": Motion(4.5, 250.0),
}
# A token listed later (a launch) moves like the small tokens until it has a line above.
DEFAULT_MOTION = Motion(6.0, 400.0)


@dataclass(frozen=True, slots=True)
class PoolSpec:
    venue: str  # "Raydium" (constant product) or "Meteora" (DLMM)
    token_x: str
    token_y: str  # the quote side: USDC, or wSOL
    tvl_usd: int
    bin_step: int = 0  # DLMM only, bps between bins
    base_factor: int = 0  # DLMM only: base fee = base_factor · bin_step · 10 / 10⁹
    bins_each_side: int = 0  # DLMM only
    trade_fee_rate: int = TRADE_FEE_RATE  # Raydium only, per 10⁶ (its AmmConfig's fee tier)


# Raydium's CPMM offers a 1 bps fee tier besides the standard 25 bps one; a stablecoin pool
# at 25 bps would let its price sit 25 bps off the dollar with no arbitrage to pull it back.
STABLE_FEE_RATE = 100

#       venue       x       y       TVL (USD)   DLMM: bin step, base factor (fee), bins
POOLS: tuple[PoolSpec, ...] = (
    PoolSpec("Raydium", "WSOL", "USDC", 12_000_000),
    PoolSpec("Raydium", "USDT", "USDC", 4_000_000, trade_fee_rate=STABLE_FEE_RATE),
    PoolSpec("Raydium", "USDT", "WSOL", 1_500_000),
    PoolSpec("Raydium", "BONK", "WSOL", 3_000_000),
    PoolSpec("Raydium", "BONK", "USDC", 1_000_000),
    PoolSpec("Raydium", "JUP", "WSOL", 2_000_000),
    PoolSpec("Raydium", "JUP", "USDC", 2_000_000),
    PoolSpec("Raydium", "RAY", "WSOL", 2_000_000),
    PoolSpec("Raydium", "RAY", "USDC", 3_000_000),
    PoolSpec("Meteora", "WSOL", "USDC", 8_000_000, 10, 10_000, 150),  # 10 bps fee, ±15 %
    PoolSpec("Meteora", "USDT", "USDC", 3_000_000, 1, 10_000, 150),  # 1 bps fee, ±1.5 %
    PoolSpec("Meteora", "USDT", "WSOL", 1_000_000, 10, 10_000, 150),
    PoolSpec("Meteora", "BONK", "WSOL", 2_000_000, 25, 10_000, 100),  # 25 bps fee, ±28 %
    PoolSpec("Meteora", "BONK", "USDC", 1_500_000, 25, 10_000, 100),
    PoolSpec("Meteora", "JUP", "WSOL", 1_000_000, 20, 10_000, 100),
    PoolSpec("Meteora", "JUP", "USDC", 2_000_000, 20, 10_000, 100),
    PoolSpec("Meteora", "RAY", "WSOL", 1_000_000, 20, 10_000, 100),
    PoolSpec("Meteora", "RAY", "USDC", 1_500_000, 20, 10_000, 100),
)


def reference_price(token_x: str, token_y: str) -> float:
    """Price of x in y, in base units (what pools store)."""
    x, y = REGISTRY.resolve(token_x), REGISTRY.resolve(token_y)
    ui = REFERENCE_USD[token_x] / REFERENCE_USD[token_y]
    return float(ui.scaleb(y.decimals - x.decimals))


def usd_to_base(token: str, usd: Decimal) -> int:
    return int((usd / REFERENCE_USD[token]).scaleb(REGISTRY.resolve(token).decimals))

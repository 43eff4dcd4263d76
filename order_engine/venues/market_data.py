"""The simulated market's starting point: reference prices and every pool, in one place.

Liquidity is of the order of the real pools' (Raydium's constant-product pools a few million
dollars, Meteora's DLMM pools concentrated in bins around the price), so a few-SOL order
barely moves a price while a few-thousand-SOL order pays for its size, and splitting it
across venues pays off.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

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
class PoolSpec:
    venue: str  # "Raydium" (constant product) or "Meteora" (DLMM)
    token_x: str
    token_y: str  # the quote side: USDC, or wSOL
    tvl_usd: int
    bin_step: int = 0  # DLMM only, bps between bins
    base_factor: int = 0  # DLMM only: base fee = base_factor · bin_step · 10 / 10⁹
    bins_each_side: int = 0  # DLMM only


#       venue       x       y       TVL (USD)   DLMM: bin step, base factor (fee), bins
POOLS: tuple[PoolSpec, ...] = (
    PoolSpec("Raydium", "WSOL", "USDC", 12_000_000),
    PoolSpec("Raydium", "USDT", "USDC", 4_000_000),
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

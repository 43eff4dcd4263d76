"""Token launches: an upcoming token's first pool, as a pump.fun token migrates to an AMM once
its bonding curve completes, and what a follower of the chain learns from one.

The market opens the pool at the curve's last price (`LAUNCH_USD`) against wSOL, holding
about what a completed curve migrates (~80 SOL and as much in tokens). A process that
follows the chain's account stream learns of a launch from the new pool's state, which
names its tokens: `note_launches` makes them tradable in that process's registry.
"""

from __future__ import annotations

from decimal import Decimal

from order_engine.venues.cpmm import ConstantProductPool
from order_engine.venues.dlmm import DlmmPool
from order_engine.venues.feed import AccountUpdate, FeedMessage, Snapshot
from order_engine.venues.market_data import PoolSpec
from order_engine.venues.pool import Pool
from order_engine.venues.tokens import Token, TokenRegistry

QUOTE_TOKEN = "WSOL"
DEFAULT_VENUE = "Raydium"
DEFAULT_LIQUIDITY_USD = 24_000
# Below this a pool is dust (a few bins' worth); above it, beyond any memecoin's.
MIN_LIQUIDITY_USD = 100
MAX_LIQUIDITY_USD = 1_000_000_000

# Each listed token's bonding-curve price at completion (about $69k of market cap over a
# billion tokens), so its pool opens there.
LAUNCH_USD: dict[str, Decimal] = {
    "WOOF": Decimal("0.000069"),
    "ZAPP": Decimal("0.00012"),
    "GLORB": Decimal("0.000041"),
    "MEOWL": Decimal("0.000088"),
    "SNEK": Decimal("0.000057"),
}
DEFAULT_LAUNCH_USD = Decimal("0.00005")

# A new token's Meteora pool: wide bins for a volatile price (50 bps apart, 50 bps base
# fee), ±49 % of range around the opening price.
METEORA_BIN_STEP = 50
METEORA_BASE_FACTOR = 10_000
METEORA_BINS_EACH_SIDE = 80


def launch_usd(symbol: str) -> Decimal:
    return LAUNCH_USD.get(symbol, DEFAULT_LAUNCH_USD)


def launch_spec(symbol: str, venue: str, liquidity_usd: int) -> PoolSpec:
    """The token's first pool, against wSOL, on `venue`."""
    if venue == "Meteora":
        return PoolSpec(
            venue,
            symbol,
            QUOTE_TOKEN,
            liquidity_usd,
            METEORA_BIN_STEP,
            METEORA_BASE_FACTOR,
            METEORA_BINS_EACH_SIDE,
        )
    return PoolSpec(venue, symbol, QUOTE_TOKEN, liquidity_usd)


def pool_depth(pool: Pool, token: str) -> int:
    """Base units of `token` (a symbol as pools name it: WSOL, not SOL) the pool holds to
    trade against: its reserve, fees owed to others excluded. A sniper's `minLiquidity` in
    its token_in is compared with this, for the pool pairing token_in with its target."""
    if token not in (pool.token_x, pool.token_y):
        raise ValueError(f"{token} is not in pool {pool.pool_id}")
    side = 0 if token == pool.token_x else 1
    if isinstance(pool, ConstantProductPool):
        return pool.reserve_x if side == 0 else pool.reserve_y
    if isinstance(pool, DlmmPool):
        return sum(amounts[side] for amounts in pool.bins.values())
    raise TypeError(f"no depth for a pool of type {type(pool).__name__}")


def note_launches(registry: TokenRegistry, message: FeedMessage) -> tuple[Token, ...]:
    """Keep `registry` in step with the chain a feed message describes: a snapshot holds
    every pool (what is tradable is exactly what they hold), an update may be a new pool
    (its whole state names its tokens). The tokens this message made tradable."""
    if isinstance(message, Snapshot):
        before = set(registry.upcoming())
        registry.sync_pools(
            symbol
            for pool in message.pools
            for symbol in (pool.state.get("token_x"), pool.state.get("token_y"))
            if isinstance(symbol, str)
        )
        return tuple(t for t in registry if t in before)
    if isinstance(message, AccountUpdate):
        # A delta may name no tokens (a DLMM pool's); a pool's first state always does.
        x, y = message.state.get("token_x"), message.state.get("token_y")
        return registry.observe_pool(*(s for s in (x, y) if isinstance(s, str)))
    return ()

"""The simulated market: seeded, deterministic price motion that stays near the reference."""

from __future__ import annotations

import asyncio
import itertools
import statistics

from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.market_data import POOLS, reference_price
from order_engine.venues.tokens import REGISTRY

SOL = REGISTRY.resolve("SOL")
USDC = REGISTRY.resolve("USDC")
ONE_SOL = 10**9


def prices(market: SimulatedMarket) -> dict[str, float]:
    return {
        pool.pool_id: pool.spot_price()
        for venue in market.venues.values()
        for pool in venue.pools.values()
    }


def test_every_pool_spec_is_built_on_its_venue() -> None:
    market = SimulatedMarket(PROFILES["instant"])
    assert set(market.venues) == {"Raydium", "Meteora"}
    built = {
        (venue.name, pool.token_x, pool.token_y)
        for venue in market.venues.values()
        for pool in venue.pools.values()
    }
    assert built == {(s.venue, s.token_x, s.token_y) for s in POOLS}


def test_same_seed_same_prices_after_the_same_steps() -> None:
    a = SimulatedMarket(PROFILES["instant"], seed=7)
    b = SimulatedMarket(PROFILES["instant"], seed=7)
    assert prices(a) == prices(b)
    a.step(150)
    b.step(150)
    assert prices(a) == prices(b)
    assert a.now() == b.now() == 150.0
    q = a.venues["Meteora"].best_quote(SOL, USDC, 1_000 * ONE_SOL)
    assert q == b.venues["Meteora"].best_quote(SOL, USDC, 1_000 * ONE_SOL)


def test_different_seeds_different_prices() -> None:
    a = SimulatedMarket(PROFILES["instant"], seed=1)
    b = SimulatedMarket(PROFILES["instant"], seed=2)
    a.step(50)
    b.step(50)
    pa, pb = prices(a), prices(b)
    assert sum(pa[pid] != pb[pid] for pid in pa) >= len(pa) // 2


def test_steps_move_prices() -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=3)
    start = prices(market)
    market.step(20)
    moved = prices(market)
    assert sum(start[pid] != moved[pid] for pid in start) >= len(start) // 2


def test_venues_spread_by_a_fraction_of_a_percent_and_the_best_venue_changes() -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=1)
    raydium, meteora = market.venues["Raydium"], market.venues["Meteora"]
    spreads, raydium_better = [], []
    for _ in range(500):
        market.step()
        r = raydium.pools["raydium:WSOL-USDC"].spot_price()
        m = meteora.pools["meteora:WSOL-USDC"].spot_price()
        spreads.append(abs(r / m - 1))
        raydium_better.append(
            raydium.best_quote(SOL, USDC, ONE_SOL).amount_out
            > meteora.best_quote(SOL, USDC, ONE_SOL).amount_out
        )
    assert 0.001 <= statistics.median(spreads) <= 0.03
    changes = sum(a != b for a, b in itertools.pairwise(raydium_better))
    assert changes >= 1


def test_prices_mean_revert_to_the_reference() -> None:
    market = SimulatedMarket(PROFILES["instant"], seed=5)
    pools = [p for v in market.venues.values() for p in v.pools.values()]
    worst = 0.0
    for _ in range(20):
        market.step(100)
        for pool in pools:
            ratio = pool.spot_price() / reference_price(pool.token_x, pool.token_y)
            worst = max(worst, abs(ratio - 1))
    assert market.now() == 2_000.0
    # Stationary deviation is 8 / sqrt(1 - 0.98²) ≈ 40 bps per pool: ±5 % is far out.
    assert worst < 0.05


async def test_start_runs_the_drift_task_and_stop_ends_it() -> None:
    def drifting() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "market-drift"]

    idle = SimulatedMarket(PROFILES["instant"])
    await idle.start()  # no background motion in the instant profile
    assert drifting() == []

    market = SimulatedMarket(PROFILES["realistic"])
    await market.start()
    await market.start()  # idempotent
    assert len(drifting()) == 1
    await market.stop()
    await market.stop()
    assert drifting() == []
    await idle.stop()  # its slot notices run even without motion

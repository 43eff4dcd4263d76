"""`python -m bench.spreads`: how the simulated market's two venues price the same pairs.

Runs the market of a profile (realistic by default) for N steps per seed, with no wall
clock, and prints per pair that both venues list:
- the spread between the venues' mid prices (Meteora over Raydium) after each step: the
  median, p99 and largest size and the range, next to the no-arbitrage band (both pools'
  fees; median over the steps, as a DLMM pool's variable fee moves it), and how far the
  spread ever went past the band in force at that step;
- which venue quotes more for an order of $100, $1,000 and $10,000 (both ways, the venue's
  best route, as the router sees it): each venue's share of the wins;
- free triangles: on each venue, out through a third token and back through the pair's own
  pool (or the other way round) with $1: the best such round trip, in bps; above zero it
  would be free money.

python -m bench.spreads                          # realistic, seeds 1-3, 1200 steps each
python -m bench.spreads --steps 300 --seeds 7    # 150 s of market time, one seed
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from bench.stats import percentile
from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.market_data import usd_to_base
from order_engine.venues.pool import Pool
from order_engine.venues.tokens import REGISTRY

VENUES = ("Raydium", "Meteora")
SIZES_USD = (100, 1_000, 10_000)
PROBE_USD = Decimal(1)  # for mid prices and round trips: far below any pool's price impact
INTERMEDIATES = ("WSOL", "USDC")


@dataclass(slots=True)
class PairStats:
    spreads_bps: list[float] = field(default_factory=list)
    bands_bps: list[float] = field(default_factory=list)
    past_band_bps: list[float] = field(default_factory=list)
    wins: dict[int, dict[str, int]] = field(
        default_factory=lambda: {usd: dict.fromkeys((*VENUES, "tie"), 0) for usd in SIZES_USD}
    )
    round_trip_bps: dict[str, float] = field(default_factory=dict)  # per venue, the best


def mid_and_fee(pool: Pool, now: float) -> tuple[float, float]:
    """(mid price of x in y, fee rate) from what a tiny swap each way gets: a DLMM pool's
    `spot_price` can sit a whole bin off what a trader actually gets."""
    rates, fees = [], []
    for token in (pool.token_x, pool.token_y):
        fill = pool.quote(token, usd_to_base(token, PROBE_USD), now)
        rates.append(fill.amount_out / (fill.amount_in - fill.fee))
        fees.append(fill.fee / fill.amount_in)
    return math.sqrt(rates[0] / rates[1]), max(fees)


def round_trips(pools: Sequence[Pool], x: str, y: str, now: float) -> Iterator[float]:
    """What $1 comes back as, out through a third token and back through the x/y pool or the
    other way round (1 = no gain, no loss)."""
    by_pair = {frozenset((p.token_x, p.token_y)): p for p in pools}
    direct = by_pair[frozenset((x, y))]
    for (a, b), mid in itertools.product(((x, y), (y, x)), INTERMEDIATES):
        first, second = by_pair.get(frozenset((a, mid))), by_pair.get(frozenset((mid, b)))
        if mid in (a, b) or first is None or second is None:
            continue
        amount = usd_to_base(a, PROBE_USD)
        there = second.quote(mid, first.quote(a, amount, now).amount_out, now).amount_out
        yield direct.quote(b, there, now).amount_out / amount
        there = direct.quote(a, amount, now).amount_out
        yield first.quote(mid, second.quote(b, there, now).amount_out, now).amount_out / amount


def shared_pairs(market: SimulatedMarket) -> list[tuple[str, str]]:
    listed = [
        {(pool.token_x, pool.token_y) for pool in venue.pools.values()}
        for venue in market.venues.values()
    ]
    return sorted(set.intersection(*listed))


def measure(market: SimulatedMarket, stats: dict[tuple[str, str], PairStats]) -> None:
    now = market.now()
    for (x, y), pair in stats.items():
        pools = [market.venues[v].pools[f"{v.lower()}:{x}-{y}"] for v in VENUES]
        (r_mid, r_fee), (m_mid, m_fee) = (mid_and_fee(pool, now) for pool in pools)
        spread = (m_mid / r_mid - 1) * 10_000
        band = (r_fee + m_fee) * 10_000
        pair.spreads_bps.append(spread)
        pair.bands_bps.append(band)
        pair.past_band_bps.append(abs(spread) - band)
        for usd, (a, b) in itertools.product(SIZES_USD, ((x, y), (y, x))):
            token_in, token_out = REGISTRY.resolve(a), REGISTRY.resolve(b)
            amount = usd_to_base(a, Decimal(usd))
            outs = [
                market.venues[v].best_quote(token_in, token_out, amount).amount_out for v in VENUES
            ]
            winner = "tie" if outs[0] == outs[1] else VENUES[outs.index(max(outs))]
            pair.wins[usd][winner] += 1
        for name in VENUES:
            for back in round_trips(list(market.venues[name].pools.values()), x, y, now):
                best = pair.round_trip_bps.get(name, -math.inf)
                pair.round_trip_bps[name] = max(best, (back - 1) * 10_000)


def run(profile: str, seeds: Sequence[int], steps: int) -> dict[tuple[str, str], PairStats]:
    stats: dict[tuple[str, str], PairStats] = {}
    for seed in seeds:
        market = SimulatedMarket(PROFILES[profile], seed=seed)
        for pair in shared_pairs(market):
            stats.setdefault(pair, PairStats())
        for _ in range(steps):
            market.step()
            measure(market, stats)
    return stats


def table(stats: dict[tuple[str, str], PairStats]) -> list[str]:
    wins = "  ".join(f"{f'${usd:,} R/M %':>13}" for usd in SIZES_USD)
    lines = [
        f"{'pair':<10} {'band':>5} {'|spread| p50':>12} {'p99':>5} {'max':>5} {'past band':>9} "
        f"{'range':>11}  {wins}  {'round trip R/M':>14}"
    ]
    for (x, y), pair in sorted(stats.items(), key=lambda item: _order(item[0])):
        sizes = sorted(abs(s) for s in pair.spreads_bps)
        shares = []
        for usd in SIZES_USD:
            count = pair.wins[usd]
            total = sum(count.values()) or 1
            r, m = (round(100 * count[v] / total) for v in VENUES)
            shares.append(f"{f'{r} / {m}':>13}")
        trips = "n/a"
        if pair.round_trip_bps:
            trips = " / ".join(f"{pair.round_trip_bps[v]:+.1f}" for v in VENUES)
        lines.append(
            f"{x + '/' + y:<10} {percentile(sorted(pair.bands_bps), 50):>5.1f} "
            f"{percentile(sizes, 50):>12.1f} {percentile(sizes, 99):>5.1f} {sizes[-1]:>5.1f} "
            f"{max(pair.past_band_bps):>+9.1f} "
            f"{f'{min(pair.spreads_bps):+.0f}…{max(pair.spreads_bps):+.0f}':>11}  "
            f"{'  '.join(shares)}  {trips:>14}"
        )
    return lines


def _order(pair: tuple[str, str]) -> tuple[int, str]:
    # The pairs the audit looked at first, then the rest by name.
    first = [("WSOL", "USDC"), ("USDT", "USDC")]
    return (first.index(pair), "") if pair in first else (len(first), "/".join(pair))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.spreads",
        description=(__doc__ or "").split("\n")[0],
    )
    parser.add_argument("--profile", default="realistic", choices=sorted(PROFILES))
    parser.add_argument("--steps", type=int, default=1200, help="market steps per seed")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.steps < 1 or not seeds:
        print("--steps must be at least 1 and --seeds name one seed", file=sys.stderr)
        return 2
    tick = PROFILES[args.profile].drift_interval_ms / 1000 or 1.0
    print(
        f"market spreads: profile {args.profile}, seeds {args.seeds}, {args.steps} steps each "
        f"({args.steps * tick:g} s of market time); bps; spread = Meteora mid / Raydium mid - 1"
    )
    for line in table(run(args.profile, seeds, args.steps)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

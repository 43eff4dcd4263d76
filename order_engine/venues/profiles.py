"""Latency, failure and market-motion profiles of the simulated market."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    quote_latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform range per quote round trip
    land_latency_ms: tuple[float, float] = (0.0, 0.0)  # submit -> landed (or dropped)
    drop_rate: float = 0.0  # share of transactions whose blockhash expires before landing
    # A transaction not landed within this many slots (400 ms each) never will; until
    # then an unseen one may still be in flight. Solana: 150 (a minute).
    blockhash_validity_slots: int = 150
    # Market motion, one step per interval (0 = no background motion; `SimulatedMarket.step`
    # still moves the market on demand). Each step every token's fair price moves by its
    # volatility (`market_data.MOTION`), other traders trade every pool at random, and
    # arbitrageurs trade the pools back within their fees of the fair prices. The other
    # traders' net push on a pool, in the bps it would move a constant-product pool's price,
    # follows d' = d(1 - reversion) + N(0, sigma): they unwind what they bought, slowly.
    drift_interval_ms: float = 0.0
    drift_sigma_bps: float = 8.0
    drift_reversion: float = 0.02
    # Seconds between launches of the listed upcoming tokens, one at a time, in the order
    # listed (0 = never; `SimulatedMarket.launch` still launches one on command).
    launch_interval_s: float = 0.0

    def __post_init__(self) -> None:
        for field_name in ("quote_latency_ms", "land_latency_ms"):
            low, high = getattr(self, field_name)
            if not 0 <= low <= high:
                raise ValueError(f"{field_name} must be a range [low, high] with 0 <= low <= high")
        if self.blockhash_validity_slots < 1:
            raise ValueError("blockhash_validity_slots must be at least 1")
        if not 0 <= self.drop_rate < 1:
            raise ValueError("drop_rate must be in [0, 1)")
        if self.drift_interval_ms < 0 or self.drift_sigma_bps < 0:
            raise ValueError("drift_interval_ms and drift_sigma_bps must not be negative")
        if self.launch_interval_s < 0:
            raise ValueError("launch_interval_s must not be negative")
        if not 0 < self.drift_reversion <= 1:
            # 0 would be a random walk without a mean: the other traders' push would grow
            # for good, and arbitrageurs would hold a pool at the edge of its fee band.
            raise ValueError("drift_reversion must be in (0, 1]")


PROFILES: dict[str, Profile] = {
    # No latency, no drops, no background motion: tests and benchmarks.
    "instant": Profile("instant"),
    # Quote round trips of a public RPC, confirmations of a busy cluster, 2 % expiries.
    "realistic": Profile(
        "realistic",
        quote_latency_ms=(50.0, 250.0),
        land_latency_ms=(400.0, 2500.0),
        drop_rate=0.02,
        drift_interval_ms=500.0,
        launch_interval_s=180.0,
    ),
}

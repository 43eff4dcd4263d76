"""The simulated market's part of the chain's state file: what a commit carries of it, and
how a market built on that file becomes the one that stopped.

A commit carries every pool changed since the last one (a landing's pools with that
landing): its state, whole the first time it is committed (and for a constant-product pool,
always: it is a few numbers), after that with only the bins written since its last commit
(a DLMM pool's hundreds of bins are not written again for the one a swap moved). And, when
it moved, the market's own state: its clock, the fair prices' walk, the other traders' push
on each pool and the tokens launched (in order, with their venue and liquidity, so their
pools are made again before their states apply).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from order_engine.venues import launches
from order_engine.venues.chain_state import Loaded, PoolRow
from order_engine.venues.pool import pool_from_state

if TYPE_CHECKING:  # the market imports this module
    from order_engine.venues.market import SimulatedMarket


def take_unsaved(market: SimulatedMarket) -> tuple[list[PoolRow], dict[str, Any]]:
    """The pools changed since the last commit and, if it moved, the market's own state;
    from then on they count as committed."""
    pools = []
    for venue in market.venues.values():
        for pool_id in market._unsaved & venue.pools.keys():
            state, whole = venue.pools[pool_id].take_unsaved()
            pools.append(PoolRow(pool_id, venue.name, state, whole))
    market._unsaved.clear()
    meta: dict[str, Any] = {}
    if market._moved:
        market._moved = False
        meta["market"] = {
            "time": market._time,
            "fair": market.fair.state(),
            "push": dict(market._push_bps),
            "launched": list(market._launched),
        }
    return pools, meta


def restore(market: SimulatedMarket, loaded: Loaded) -> None:
    """Become the market a state file holds (nothing, for a new file): its clocks, its
    launched tokens and their pools first, then every pool's last committed state. Before
    anyone follows the market's feed: its pools change without being published. A pool
    restored is as the file holds it: its next commit carries only what changes; one the
    file does not hold is committed whole."""
    market.chain.restore_clock(loaded.meta)
    saved = loaded.meta.get("market")
    if isinstance(saved, dict):
        market._time = float(saved["time"])
        for launched in saved["launched"]:
            spec = launches.launch_spec(launched["symbol"], launched["venue"], launched["tvl"])
            stored = loaded.pools.get(market._pool_id(spec))
            if stored is None:
                continue  # its pool was never committed: the launch never happened
            market.fair.add(spec.token_x, launches.launch_usd(spec.token_x))
            pool = pool_from_state(stored[1])
            market.venues[spec.venue].add_pool(pool)
            market._track(spec, pool)
            market.feed.follow(spec.venue, pool)
            market.registry.mark_launched(spec.token_x)
            market._launched.append(launched)
        market.fair.restore(saved["fair"])
        for pool_id, push in saved["push"].items():
            if pool_id in market._push_bps:
                market._push_bps[pool_id] = float(push)
    for venue in market.venues.values():
        for pool_id, pool in venue.pools.items():
            stored = loaded.pools.get(pool_id)
            if stored is not None:
                pool.apply_state(stored[1])
                pool.mark_saved()

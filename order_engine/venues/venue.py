"""A simulated venue: a set of pools, the best route through them, latency and faults."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from order_engine.venues.base import (
    AMOUNT_TOO_SMALL,
    INSUFFICIENT_LIQUIDITY,
    NO_ROUTE,
    VENUE_DOWN,
    Hop,
    PermanentVenueError,
    Quote,
    TransientVenueError,
)
from order_engine.venues.pool import DustAmount, Fill, Pool, PoolExhausted
from order_engine.venues.profiles import Profile
from order_engine.venues.tokens import Token, TokenRegistry

# A pair without a pool of its own routes through one of these (two hops, same venue).
INTERMEDIATES = ("WSOL", "USDC")


@dataclass(slots=True)
class Faults:
    """Switches for tests: a venue that refuses, or one that never answers."""

    down: bool = False
    timeout: bool = False


class SimulatedVenue:
    def __init__(
        self,
        name: str,
        pools: Iterable[Pool],
        profile: Profile,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.faults = Faults()
        self._profile = profile
        self._rng = rng
        self._clock = clock
        self.pools: dict[str, Pool] = {}
        self._by_pair: dict[frozenset[str], Pool] = {}
        # Told of every pool a committed swap moved, so its change can be published.
        self.on_swap: Callable[[Pool], None] | None = None
        for pool in pools:
            self.add_pool(pool)

    def add_pool(self, pool: Pool) -> None:
        """Trade through one more pool (a pair has at most one per venue)."""
        pair = frozenset((pool.token_x, pool.token_y))
        if pool.pool_id in self.pools or pair in self._by_pair:
            raise ValueError(f"{self.name} already has a pool for {pool.token_x}-{pool.token_y}")
        self.pools[pool.pool_id] = pool
        self._by_pair[pair] = pool

    async def quote(self, token_in: Token, token_out: Token, amount_in: int) -> Quote:
        await self._round_trip()
        return self.best_quote(token_in, token_out, amount_in)

    async def quote_curve(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None]:
        await self._round_trip()
        return self.curve(token_in, token_out, amounts_in)

    def curve(
        self,
        token_in: Token,
        token_out: Token,
        amounts_in: Sequence[int],
        *,
        source: str = "rpc",
        slot: int | None = None,
    ) -> list[Quote | None]:
        """`quote_curve` against the pools as they are now, without the round trip: what
        quoting from a local copy of the pools does (stamped with its `source` and `slot`)."""
        return [
            self._curve_point(token_in, token_out, amount, source, slot) for amount in amounts_in
        ]

    def _curve_point(
        self, token_in: Token, token_out: Token, amount_in: int, source: str, slot: int | None
    ) -> Quote | None:
        try:
            return self.best_quote(token_in, token_out, amount_in, source=source, slot=slot)
        except PermanentVenueError as exc:
            if exc.code in (AMOUNT_TOO_SMALL, INSUFFICIENT_LIQUIDITY):
                return None
            raise

    def best_quote(
        self,
        token_in: Token,
        token_out: Token,
        amount_in: int,
        *,
        source: str = "rpc",
        slot: int | None = None,
    ) -> Quote:
        """The route with the most output, priced against the pools as they are now."""
        paths = self._paths(token_in, token_out)
        if not paths:
            raise PermanentVenueError(
                NO_ROUTE,
                f"{self.name} has no pool path from {token_in.symbol} to {token_out.symbol}",
            )
        best: tuple[list[Fill], list[str]] | None = None
        failure: Exception | None = None
        for path in paths:
            try:
                fills = self._walk(path, amount_in, commit=False)
            except (PoolExhausted, DustAmount) as exc:
                failure = exc
                continue
            if best is None or fills[-1].amount_out > best[0][-1].amount_out:
                best = (fills, path)
        if best is None:
            if isinstance(failure, DustAmount):
                raise PermanentVenueError(
                    AMOUNT_TOO_SMALL,
                    f"{token_in.format(amount_in)} {token_in.symbol} is too small to swap "
                    f"on {self.name}",
                )
            raise PermanentVenueError(
                INSUFFICIENT_LIQUIDITY,
                f"{self.name}'s pools cannot fill {token_in.format(amount_in)} {token_in.symbol}",
            )
        return self._to_quote(token_in, token_out, amount_in, *best, source, slot)

    def price_bound(self, token_in: Token, token_out: Token) -> float | None:
        """The most output per unit of input (base units) any path pays at the pools' current
        prices and least fees, before price impact: no swap of any size pays more, since
        impact and dynamic fees only take away (None: no path)."""
        best = None
        for path in self._paths(token_in, token_out):
            price = 1.0
            for a, b in pairwise(path):
                pool = self._by_pair[frozenset((a, b))]
                spot = pool.spot_price()
                if a == pool.token_x:
                    price *= spot
                else:
                    price = price / spot if spot > 0 else math.inf
                price *= 1 - pool.least_fee()
            best = price if best is None else max(best, price)
        return best

    def execute(self, hops: Sequence[Hop], amount_in: int, *, commit: bool) -> int:
        """Re-run a quoted route against the pools as they are now (at landing); with
        `commit`, the reserves move. Returns the output. Raises PoolExhausted/DustAmount."""
        path = [hops[0].token_in, *(hop.token_out for hop in hops)]
        return self._walk(path, amount_in, commit=commit)[-1].amount_out

    def _paths(self, token_in: Token, token_out: Token) -> list[list[str]]:
        a = TokenRegistry.pool_token(token_in).symbol
        b = TokenRegistry.pool_token(token_out).symbol
        if a == b:
            return []
        paths = []
        if frozenset((a, b)) in self._by_pair:
            paths.append([a, b])
        for mid in INTERMEDIATES:
            if (
                mid not in (a, b)
                and {frozenset((a, mid)), frozenset((mid, b))} <= self._by_pair.keys()
            ):
                paths.append([a, mid, b])
        return paths

    def _walk(self, path: list[str], amount_in: int, *, commit: bool) -> list[Fill]:
        fills = []
        now = self._clock()
        amount = amount_in
        for token_in, token_out in pairwise(path):
            pool = self._by_pair[frozenset((token_in, token_out))]
            if commit:
                fill = pool.swap(token_in, amount, now)
                if self.on_swap is not None:
                    self.on_swap(pool)
            else:
                fill = pool.quote(token_in, amount, now)
            fills.append(fill)
            amount = fill.amount_out
        return fills

    def _to_quote(
        self,
        token_in: Token,
        token_out: Token,
        amount_in: int,
        fills: list[Fill],
        path: list[str],
        source: str,
        slot: int | None,
    ) -> Quote:
        hops = tuple(
            Hop(
                self._by_pair[frozenset((a, b))].pool_id,
                a,
                b,
                fill.amount_in,
                fill.amount_out,
                fill.fee,
            )
            for (a, b), fill in zip(pairwise(path), fills, strict=True)
        )
        amount_out = fills[-1].amount_out
        kept = math.prod([1 - fill.fee / fill.amount_in for fill in fills])
        undisturbed = math.prod([1 - fill.price_impact_bps / 10_000 for fill in fills])
        # UI units out per UI unit in. Integers divide exactly rounded, so this is the
        # float nearest the exact ratio (and cheaper than Decimal: it runs per quote).
        price = (amount_out * token_in.scale) / (amount_in * token_out.scale)
        return Quote(
            venue=self.name,
            token_in=token_in,
            token_out=token_out,
            amount_in=amount_in,
            amount_out=amount_out,
            fee_bps=(1 - kept) * 10_000,
            price=price,
            price_impact_bps=(1 - undisturbed) * 10_000,
            hops=hops,
            source=source,
            slot=slot,
        )

    async def _round_trip(self) -> None:
        if self.faults.down:
            raise TransientVenueError(VENUE_DOWN, f"{self.name} is not answering requests")
        if self.faults.timeout:
            await (
                asyncio.get_running_loop().create_future()
            )  # never answers; cancelled by the caller
        low, high = self._profile.quote_latency_ms
        if high > 0:
            await asyncio.sleep(self._rng.uniform(low, high) / 1000)

"""Best execution across venues: quote all of them at once, take the most output.

A large order against shallow pools may get more out split across both venues (each leg
pays less price impact), as aggregators like Jupiter do; the router searches the split on a
grid, refines around the best cell, and splits only if that beats the best single venue by
`split_min_gain_bps`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from order_engine.venues.base import (
    NO_QUOTES,
    PRICE_IMPACT_TOO_HIGH,
    VENUE_TIMEOUT,
    PermanentVenueError,
    Quote,
    TransientVenueError,
    Venue,
    VenueError,
)
from order_engine.venues.tokens import Token

log = logging.getLogger("order_engine.routing")


@dataclass(frozen=True, slots=True)
class Route:
    legs: tuple[Quote, ...]  # what will be executed: one leg, or two for a split
    quotes: tuple[Quote, ...]  # every venue's quote for the whole amount
    skipped: tuple[tuple[str, str], ...]  # (venue, error code) of venues that did not quote
    reason: str

    @property
    def amount_out(self) -> int:
        return sum(leg.amount_out for leg in self.legs)

    @property
    def venue(self) -> str:
        """The venue of the largest leg (the whole order when not split)."""
        return max(self.legs, key=lambda q: q.amount_in).venue

    @property
    def split(self) -> bool:
        return len(self.legs) > 1


def gain_bps(better: int, worse: int) -> float:
    return (better - worse) / worse * 10_000 if worse > 0 else float("inf")


class Router:
    def __init__(
        self,
        venues: Sequence[Venue],
        *,
        quote_timeout: float,
        split_min_gain_bps: float = 1.0,
        split_steps: int = 20,
        max_price_impact_bps: float = 1_000.0,
    ) -> None:
        if not venues:
            raise ValueError("a router needs at least one venue")
        self._venues = list(venues)
        self._timeout = quote_timeout
        self._split_min_gain_bps = split_min_gain_bps
        self._steps = split_steps
        self._max_impact = max_price_impact_bps

    async def route(self, token_in: Token, token_out: Token, amount_in: int) -> Route:
        results = await asyncio.gather(
            *(self._quote(v, token_in, token_out, amount_in) for v in self._venues)
        )
        quotes = tuple(sorted((r for r in results if isinstance(r, Quote)), key=_best_first))
        named = zip((v.name for v in self._venues), results, strict=True)
        failed = [(name, r) for name, r in named if isinstance(r, VenueError)]
        skipped = tuple((name, e.code) for name, e in failed)
        if not quotes:
            raise _no_quote_error(failed)
        best = quotes[0]
        route = Route((best,), quotes, skipped, _single_reason(quotes, skipped))
        if (
            len(quotes) >= 2
            and best.price_impact_bps >= self._split_min_gain_bps
            and _split_can_pay(best, quotes[1])
        ):
            split = await self._best_split(quotes[0], quotes[1], token_in, token_out, amount_in)
            if split is not None:
                route = Route(split, quotes, skipped, _split_reason(split, best))
        impact = max(leg.price_impact_bps for leg in route.legs)
        if impact > self._max_impact:
            # Slippage tolerance guards against the market moving after the quote; this
            # guards against an order far too large for the pools, however it is split.
            raise PermanentVenueError(
                PRICE_IMPACT_TOO_HIGH,
                f"price impact {impact:.0f} bps exceeds the limit of {self._max_impact:.0f} bps",
            )
        return route

    async def _quote(
        self, venue: Venue, token_in: Token, token_out: Token, amount_in: int
    ) -> Quote | VenueError:
        try:
            async with asyncio.timeout(self._timeout):
                return await venue.quote(token_in, token_out, amount_in)
        except TimeoutError:
            return TransientVenueError(
                VENUE_TIMEOUT, f"{venue.name} did not quote within {self._timeout * 1000:.0f} ms"
            )
        except VenueError as exc:
            return exc

    async def _curve(
        self, venue: Venue, token_in: Token, token_out: Token, amounts: list[int]
    ) -> list[Quote | None] | None:
        try:
            async with asyncio.timeout(self._timeout):
                return await venue.quote_curve(token_in, token_out, amounts)
        except (TimeoutError, VenueError):
            return None  # the single-venue route stands

    async def _best_split(
        self, a: Quote, b: Quote, token_in: Token, token_out: Token, amount: int
    ) -> tuple[Quote, ...] | None:
        """Search the share of venue `a` on a grid, then on a finer grid around the best."""
        venue_a = next(v for v in self._venues if v.name == a.venue)
        venue_b = next(v for v in self._venues if v.name == b.venue)
        lo, hi = 0, amount
        best: tuple[int, Quote, Quote] | None = None
        for _ in range(2):
            step = (hi - lo) // self._steps
            if step < 1:
                break
            shares = [s for s in range(lo + step, hi, step) if 0 < s < amount]
            curve_a, curve_b = await asyncio.gather(
                self._curve(venue_a, token_in, token_out, shares),
                self._curve(venue_b, token_in, token_out, [amount - s for s in shares]),
            )
            if curve_a is None or curve_b is None:
                break
            for share, qa, qb in zip(shares, curve_a, curve_b, strict=True):
                if qa is None or qb is None:
                    continue  # one side cannot fill its share
                total = qa.amount_out + qb.amount_out
                if best is None or total > best[1].amount_out + best[2].amount_out:
                    best = (share, qa, qb)
            if best is None:
                break
            lo, hi = best[0] - step, best[0] + step
        if best is None:
            return None
        _, qa, qb = best
        if gain_bps(qa.amount_out + qb.amount_out, a.amount_out) < self._split_min_gain_bps:
            return None
        return (qa, qb)


def _split_can_pay(best: Quote, other: Quote) -> bool:
    """Whether moving part of the order to `other` can pay at all: its pre-trade rate (net
    of fees) must beat `best`'s rate at the end of its fill, which sits about twice the
    average price impact below its pre-trade rate (3x leaves a margin). Most orders are
    small and fail this at once, sparing the search two more round trips to the venues."""

    def pre_trade(q: Quote) -> float:
        return q.amount_out / q.amount_in / max(1e-9, 1 - q.price_impact_bps / 10_000)

    return pre_trade(other) > pre_trade(best) * (1 - 3 * best.price_impact_bps / 10_000)


def _best_first(q: Quote) -> tuple[int, str]:
    return (-q.amount_out, q.venue)


def _no_quote_error(failed: list[tuple[str, VenueError]]) -> VenueError:
    detail = ", ".join(f"{name}: {e.code}" for name, e in failed)
    if failed and all(isinstance(e, PermanentVenueError) for _, e in failed):
        first = failed[0][1]
        return PermanentVenueError(first.code, f"{first.message} ({detail})")
    return TransientVenueError(NO_QUOTES, f"no venue could quote ({detail})")


def _single_reason(quotes: tuple[Quote, ...], skipped: tuple[tuple[str, str], ...]) -> str:
    best = quotes[0]
    if len(quotes) == 1:
        why = ", ".join(f"{name} {code}" for name, code in skipped)
        return f"only quote ({why})" if why else "only venue"
    second = quotes[1]
    return f"best output, +{gain_bps(best.amount_out, second.amount_out):.1f} bps vs {second.venue}"


def _split_reason(legs: tuple[Quote, ...], best_single: Quote) -> str:
    total_in = sum(leg.amount_in for leg in legs)
    shares = " / ".join(f"{leg.venue} {leg.amount_in / total_in:.0%}" for leg in legs)
    gain = gain_bps(sum(leg.amount_out for leg in legs), best_single.amount_out)
    return f"split {shares}, +{gain:.1f} bps vs {best_single.venue} alone"

"""Best execution across venues: quote all of them at once, take the most output.

A large order against shallow pools may get more out split across both venues (each leg
pays less price impact), as aggregators like Jupiter do; the router searches the split on a
grid, refines around the best cell, and splits only if that beats the best single venue by
`split_min_gain_bps`.

The search costs two more round trips to the venues, so it runs only when a split could pay:
the request that prices the whole order on a venue also prices the smallest leg the search
makes and a little more than the order, and those bound what any split can gain
(`_split_gain_bound`). Most orders are ruled out there, whatever their price impact.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from order_engine.venues.base import (
    NO_QUOTES,
    PRICE_IMPACT_TOO_HIGH,
    VENUE_TIMEOUT,
    LocalCurve,
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


def gain_bps(better: float, worse: float) -> float:
    return (better - worse) / worse * 10_000 if worse > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class _Probe:
    """One venue's answer for the whole amount, and what bounds a split's gain (None when
    the venue could not fill that size)."""

    whole: Quote | VenueError
    slice: Quote | None  # the smallest leg the split search makes
    beyond: Quote | None  # a sixteenth more than the whole amount


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
        self._local = [v if isinstance(v, LocalCurve) else None for v in self._venues]
        self._local_by_name = {
            v.name: local
            for v, local in zip(self._venues, self._local, strict=True)
            if local is not None
        }
        self._timeout = quote_timeout
        self._split_min_gain_bps = split_min_gain_bps
        self._steps = split_steps
        self._max_impact = max_price_impact_bps

    async def route(self, token_in: Token, token_out: Token, amount_in: int) -> Route:
        probes = self._probe_now(token_in, token_out, amount_in)
        local = probes is not None
        if probes is None:
            probes = await asyncio.gather(
                *(self._probe(v, token_in, token_out, amount_in) for v in self._venues)
            )
        results = [p.whole for p in probes]
        quotes = tuple(sorted((r for r in results if isinstance(r, Quote)), key=_best_first))
        named = zip((v.name for v in self._venues), results, strict=True)
        failed = [(name, r) for name, r in named if isinstance(r, VenueError)]
        skipped = tuple((name, e.code) for name, e in failed)
        if not quotes:
            raise _no_quote_error(failed)
        best = quotes[0]
        route = Route((best,), quotes, skipped, _single_reason(quotes, skipped))
        if len(quotes) >= 2:
            by_venue = {v.name: p for v, p in zip(self._venues, probes, strict=True)}
            best_probe = by_venue[best.venue]
            if local:
                best_probe = self._beyond_now(best_probe, best.venue, token_in, token_out)
            bound = _split_gain_bound(best_probe, by_venue[quotes[1].venue])
            if gain_bps(best.amount_out + bound, best.amount_out) >= self._split_min_gain_bps:
                split = await self._best_split(best, quotes[1], token_in, token_out, amount_in)
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

    def _probe_sizes(self, amount_in: int) -> list[int]:
        return [amount_in, self._finest_leg(amount_in), _beyond(amount_in)]

    def _probe_now(self, token_in: Token, token_out: Token, amount_in: int) -> list[_Probe] | None:
        """Every venue probed from pools held here, without a task or a timer per venue (a
        visible share of an order's CPU); None unless every venue can, or if one of them
        cannot fill the order (the venue's own quote then says why). Only the best venue's
        quote beyond the order is used: it is asked for once the best is known
        (`_beyond_now`), not of every venue."""
        sizes = self._probe_sizes(amount_in)[:2]
        probes = []
        for local in self._local:
            if local is None:
                return None
            try:
                curve = local.curve_now(token_in, token_out, sizes)
            except VenueError as exc:
                probes.append(_Probe(exc, None, None))
                continue
            if curve is None or curve[0] is None:
                return None
            probes.append(_Probe(curve[0], curve[1], None))
        return probes

    def _beyond_now(self, probe: _Probe, venue: str, token_in: Token, token_out: Token) -> _Probe:
        """`probe` (of a local venue) with its quote beyond the order; as it was (the bound
        then does without) if the venue cannot give one here and now."""
        whole = probe.whole
        assert isinstance(whole, Quote)
        try:
            curve = self._local_by_name[venue].curve_now(
                token_in, token_out, [_beyond(whole.amount_in)]
            )
        except VenueError:
            return probe
        if curve is None:
            return probe
        return replace(probe, beyond=curve[0])

    async def _probe(
        self, venue: Venue, token_in: Token, token_out: Token, amount_in: int
    ) -> _Probe:
        sizes = self._probe_sizes(amount_in)
        try:
            async with asyncio.timeout(self._timeout):
                whole, small, beyond = await venue.quote_curve(token_in, token_out, sizes)
        except TimeoutError:
            return _Probe(self._timed_out(venue), None, None)
        except VenueError as exc:
            return _Probe(exc, None, None)
        if whole is None:
            # The curve only says the pools cannot fill it; the quote says why.
            return _Probe(await self._quote(venue, token_in, token_out, amount_in), None, None)
        return _Probe(whole, small, beyond)

    def _finest_leg(self, amount: int) -> int:
        """No leg `_best_split` makes is smaller: its refined grid's step."""
        return max(1, 2 * (amount // self._steps) // self._steps)

    async def _quote(
        self, venue: Venue, token_in: Token, token_out: Token, amount_in: int
    ) -> Quote | VenueError:
        try:
            async with asyncio.timeout(self._timeout):
                return await venue.quote(token_in, token_out, amount_in)
        except TimeoutError:
            return self._timed_out(venue)
        except VenueError as exc:
            return exc

    def _timed_out(self, venue: Venue) -> TransientVenueError:
        return TransientVenueError(
            VENUE_TIMEOUT, f"{venue.name} did not quote within {self._timeout * 1000:.0f} ms"
        )

    async def _curve(
        self, venue: Venue, token_in: Token, token_out: Token, amounts: list[int]
    ) -> list[Quote | None] | None:
        try:
            if isinstance(venue, LocalCurve):
                curve = venue.curve_now(token_in, token_out, amounts)
                if curve is not None:
                    return curve
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


# Base units of a hop's input that rounding in the pool's favour may cost a fill: each bin
# it touches (the one swap, on a curve) rounds the fee up, and the input that drains the
# bin, by under a unit each. A few bins' worth: an order crossing more is too large for
# a few units more to matter.
_ROUNDED_UNITS = 4
# The fee of a slice as small as the search's finest leg is rounded up once in each bin it
# touches: one, or two across a bin's edge.
_SLICE_FEE_ROUNDINGS = 2
# SPL amounts are u64: a venue refuses to quote more.
_U64_MAX = 2**64 - 1


def _beyond(amount: int) -> int:
    """A sixteenth more than the order: where the best venue's marginal rate is read."""
    return min(amount + amount // 16 + 1, _U64_MAX)


def _split_gain_bound(best: _Probe, other: _Probe) -> float:
    """An upper bound on what any split the search can make gains over `best` alone, in
    base units of the output (inf when the probes cannot give one).

    Along one pool path a venue's output is concave in the input (each unit fills at a
    price no better than the one before: further along the curve, or in a worse bin), so
    its average rate only falls with size, and the best of several paths keeps that. No leg
    the search makes is smaller than the probed slice, so none fills above u, the slice's
    pre-trade rate (or the whole order's, if higher: rounding a few base units can send a
    slice down a worse path), and

        A(s) + B(n - s) <= n * max(u_A, u_B)                                           (1)

    Moving t off the best venue A costs at least t times A's marginal rate at the end of
    its fill, itself at least m_A, the rate of the sixteenth beyond it, so

        A(n - t) + B(t) - A(n) <= t * (u_B - m_A) <= n * max(0, u_B - m_A)             (2)

    as long as one path serves A from the slice to beyond the order (two constant-product
    paths' curves cross at most once, so that path serves every size in between).

    (1) rules out orders that fill on A near the best rate on offer; (2) those the other
    venue is worse for than A at the margin, however big. Both allow for what rounding in
    the pools' favour may have cost the quotes. Neither reads the price impact: a fill
    inside one bin has none, yet a slice moved to the other venue may still pay."""
    whole, other_whole = best.whole, other.whole
    assert isinstance(whole, Quote) and isinstance(other_whole, Quote)
    if best.slice is None or other.slice is None:
        return math.inf
    n = whole.amount_in
    u_best = max(_rate_ceiling(best.slice), _rate_ceiling(whole))
    u_other = max(_rate_ceiling(other.slice), _rate_ceiling(other_whole))
    bound = n * max(u_best, u_other) - whole.amount_out
    beyond = best.beyond
    if (
        beyond is not None
        and beyond.amount_in > n
        and _path(best.slice) == _path(whole) == _path(beyond)
    ):
        rounding = _rounding_ceiling(whole)
        marginal = (beyond.amount_out - whole.amount_out - rounding) / (beyond.amount_in - n)
        bound = min(bound, n * max(0.0, u_other - marginal) + rounding)
    return bound


def _rate_ceiling(q: Quote) -> float:
    """q's rate with its price impact taken back out: the pre-trade rate along its path,
    net of fees (output per input, base units). The fee was rounded up, in the pool's
    favour, which would understate the rate; allowed for, so that it stays a ceiling."""
    rate = q.amount_out / q.amount_in / max(1e-12, 1 - q.price_impact_bps / 10_000)
    rounded = sum(_SLICE_FEE_ROUNDINGS / max(1, hop.amount_in - hop.fee) for hop in q.hops)
    return rate * (1 + rounded)


def _rounding_ceiling(q: Quote) -> float:
    """The most output (base units) rounding in the pools' favour can have cost q."""
    return sum(
        _ROUNDED_UNITS * q.amount_out / max(1, hop.amount_in)
        + q.amount_out / max(1, hop.amount_out)
        for hop in q.hops
    )


def _path(q: Quote) -> tuple[str, ...]:
    return tuple(hop.pool_id for hop in q.hops)


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

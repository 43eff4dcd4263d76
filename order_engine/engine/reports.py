"""How the engine describes what it did: event payloads, routing metrics and log lines."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from order_engine.metrics import Metrics
from order_engine.payloads import BuildingData, ConfirmedData, Leg, QuoteInfo, Skipped
from order_engine.routing import Route, gain_bps
from order_engine.venues.base import Quote, Receipt
from order_engine.venues.tokens import Token

from .run import OrderRun

log = logging.getLogger("order_engine.engine")


def building_data(run: OrderRun, route: Route, floor: int) -> BuildingData:
    out = run.token_out
    return BuildingData(
        dex=route.venue,
        quotes=[_quote_info(q, out) for q in route.quotes],
        expected_amount_out=out.format(route.amount_out),
        min_amount_out=out.format(floor),
        wrap_sol=run.token_in.native,
        unwrap_sol=out.native,
        reason=route.reason,
        skipped=[Skipped(dex=name, code=code) for name, code in route.skipped] or None,
        legs=_legs(run, [(q.venue, q.amount_in, q.amount_out) for q in route.legs]),
    )


def confirmed_data(run: OrderRun, receipt: Receipt, venue: str, price: float) -> ConfirmedData:
    return ConfirmedData(
        dex=venue,
        tx_hash=receipt.signature,
        executed_price=price,
        amount_in=run.token_in.format(receipt.amount_in),
        amount_out=run.token_out.format(receipt.amount_out),
        legs=_legs(run, [(leg.venue, leg.amount_in, leg.amount_out) for leg in receipt.legs]),
        slot=receipt.slot,
    )


def _legs(run: OrderRun, legs: Sequence[tuple[str, int, int]]) -> list[Leg] | None:
    """The legs of a split route (None for a single venue)."""
    if len(legs) < 2:
        return None
    total = sum(amount_in for _, amount_in, _ in legs)
    return [
        Leg(
            dex=venue,
            share=amount_in / total,
            amount_in=run.token_in.format(amount_in),
            amount_out=run.token_out.format(amount_out),
        )
        for venue, amount_in, amount_out in legs
    ]


def _quote_info(q: Quote, out: Token) -> QuoteInfo:
    return QuoteInfo(
        dex=q.venue,
        amount_out=out.format(q.amount_out),
        price=q.price,
        fee_bps=round(q.fee_bps, 2),
        price_impact_bps=round(q.price_impact_bps, 2),
        source=q.source,
        slot=q.slot,
    )


def report_route(run: OrderRun, route: Route, metrics: Metrics | None) -> None:
    if metrics is not None:
        metrics.venue_wins.labels(route.venue, str(route.split).lower()).inc()
        if len(route.quotes) > 1:
            spread = gain_bps(route.quotes[0].amount_out, route.quotes[1].amount_out)
            metrics.quote_spread_bps.observe(spread)
    # The building event carries the same: the line is for debugging, and is not even
    # formatted otherwise (every order pays for it).
    if not log.isEnabledFor(logging.DEBUG):
        return
    out = run.token_out
    quotes = ", ".join(f"{q.venue} {out.format(q.amount_out)}" for q in route.quotes)
    skipped = "".join(f", {name} skipped ({code})" for name, code in route.skipped)
    log.debug(
        "[%s] routing %s %s -> %s: %s%s => %s (%s)",
        run.order_id,
        run.token_in.format(run.order.amount),
        run.token_in.symbol,
        out.symbol,
        quotes,
        skipped,
        route.venue,
        route.reason,
    )

"""The price bound armed orders are found by: no swap of any size, on any path, pays more
per unit than it, since price impact and dynamic fees only take away."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from order_engine.venues import PROFILES, SimulatedMarket
from order_engine.venues.base import PermanentVenueError
from order_engine.venues.tokens import REGISTRY, Token

MARKET = SimulatedMarket(PROFILES["instant"], seed=3)
PAIRS = [
    (a, b)
    for a, b in itertools.permutations(REGISTRY, 2)
    if REGISTRY.pool_token(a) != REGISTRY.pool_token(b)
]


@settings(max_examples=300, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    venue=st.sampled_from(sorted(MARKET.venues)),
    ui_amount=st.floats(min_value=1e-6, max_value=1e6),
)
def test_no_quote_pays_more_than_the_bound(
    pair: tuple[Token, Token], venue: str, ui_amount: float
) -> None:
    token_in, token_out = pair
    simulated = MARKET.venues[venue]
    amount = max(1, int(ui_amount * token_in.scale))
    try:
        quote = simulated.best_quote(token_in, token_out, amount)
    except PermanentVenueError:
        return
    bound = simulated.price_bound(token_in, token_out)
    assert bound is not None
    assert quote.amount_out / amount <= bound * (1 + 1e-9)


def test_the_bound_is_tight_for_a_small_swap() -> None:
    """Fees counted, a small swap gets within a few bps of it: orders far from the market
    are not candidates."""
    sol, usdc = REGISTRY.resolve("SOL"), REGISTRY.resolve("USDC")
    for simulated in MARKET.venues.values():
        amount = sol.scale // 100
        quote = simulated.best_quote(sol, usdc, amount)
        bound = simulated.price_bound(sol, usdc)
        assert bound is not None
        assert quote.amount_out / amount > bound * (1 - 5e-4)

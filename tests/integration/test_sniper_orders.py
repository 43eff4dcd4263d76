"""Sniper orders: armed on a token before it trades, fired by the update that creates its
first pool (deep enough), and landed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from order_engine.config import Settings
from order_engine.orders import TERMINAL, OrderType, Status
from order_engine.store import Store
from order_engine.venues import SimulatedMarket
from order_engine.venues.tokens import REGISTRY
from tests.integration.test_limit_orders import Rig, rig
from tests.support.engines import holding, reach
from tests.support.factories import order_request

SOL = REGISTRY.resolve("SOL")


@pytest.fixture
async def armed(store: Store, market: SimulatedMarket, settings: Settings) -> AsyncIterator[Rig]:
    """On both stores."""
    await market.start()
    try:
        async with rig(store, market, settings) as r:
            yield r
    finally:
        await market.stop()


def sniper(target: str, min_liquidity: str | None = None) -> dict[str, Any]:
    token = REGISTRY.resolve(target, upcoming=True)
    return {
        "token_out": token.symbol,
        "order_type": OrderType.SNIPER,
        "expires_at": time.time() + 60,
        "min_liquidity": None if min_liquidity is None else SOL.to_base(Decimal(min_liquidity)),
    }


async def test_a_sniper_fires_on_its_tokens_first_pool_and_lands_in_that_slot(armed: Rig) -> None:
    fields = sniper("WOOF", min_liquidity="1")
    order = await armed.engine.submit(order_request("SOL", amount="0.5", **fields))
    await reach(armed.store, armed.hub, order.order_id, {Status.OPEN})
    await holding(armed.engine, {"limit": 0, "sniper": 1})
    launch = armed.market.launch("WOOF")
    assert await reach(armed.store, armed.hub, order.order_id, TERMINAL) is Status.CONFIRMED
    events = await armed.store.events(order.order_id)
    opened = next(e for e in events if e.status is Status.OPEN)
    assert opened.data["mint"] == REGISTRY.resolve("WOOF").mint
    assert opened.data["minLiquidity"] == "1"
    routing = next(e for e in events if e.status is Status.ROUTING)
    confirmed = events[-1]
    assert launch.quote_depth >= SOL.to_base(Decimal(1))
    # Fired in the slot of the pool's creation, landed then or after: how soon after is a
    # speed, measured by `python -m bench.triggers` (0 slots there), not asserted here.
    assert confirmed.data["slot"] >= routing.data["trigger"]["slot"] >= 0


async def test_a_pool_shallower_than_asked_does_not_fire_it(armed: Rig) -> None:
    order = await armed.engine.submit(
        order_request("SOL", amount="0.5", **sniper("ZAPP", min_liquidity="1000000"))
    )
    await reach(armed.store, armed.hub, order.order_id, {Status.OPEN})
    launch = armed.market.launch("ZAPP")
    await armed.data.reached(launch.seq)  # the view has priced the new pool
    stored = await armed.store.get(order.order_id)
    assert stored is not None and stored.status is Status.OPEN
    await holding(armed.engine, {"limit": 0, "sniper": 1})


async def test_a_sniper_on_a_token_already_trading_fires_at_once(armed: Rig) -> None:
    armed.market.launch("GLORB")
    order = await armed.engine.submit(order_request("SOL", amount="0.5", **sniper("GLORB")))
    assert await reach(armed.store, armed.hub, order.order_id, TERMINAL) is Status.CONFIRMED

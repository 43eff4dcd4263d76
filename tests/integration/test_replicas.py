"""Replicas on one PostgreSQL database sharing one market: a killed replica's orders finish
on another, API-only replicas hand orders to workers, and no swap ever lands twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from order_engine.config import Settings
from order_engine.orders import TERMINAL, Status
from order_engine.venues import SimulatedMarket
from tests.integration.test_recovery import REQUEST, history, reach, running
from tests.support.factories import make_settings
from tests.support.services import REDIS_HOST, REDIS_PORT, postgres_schema, require_redis


@pytest.fixture
async def pg_settings(tmp_path: Path) -> AsyncIterator[Settings]:
    async with postgres_schema() as url:
        yield make_settings(
            tmp_path,
            store={"url": url},
            engine={
                "lease_s": 0.3,  # short, so a takeover happens within the test's time
                "claim_interval_ms": 20.0,
                "retry_base_ms": 5.0,
                "retry_max_ms": 20.0,
            },
        )


def replica(settings: Settings, name: str, **engine: object) -> Settings:
    return settings.replace(engine={"replica_id": name, **engine})


async def test_a_killed_replicas_submitted_order_is_confirmed_elsewhere_once(
    pg_settings: Settings, market: SimulatedMarket
) -> None:
    market.chain.hold()
    async with running(replica(pg_settings, "b"), market) as b:
        async with running(replica(pg_settings, "a"), market) as a:
            order = await a.engine.submit(REQUEST)
            await reach(a, order.order_id, {Status.SUBMITTED})
        # `a` was killed (no release): `b` takes the order once the lease expires and
        # asks the chain about the transaction `a` sent, instead of sending another.
        market.chain.release()
        assert await reach(b, order.order_id, TERMINAL) is Status.CONFIRMED
        assert (await history(b, order.order_id)).count(Status.SUBMITTED) == 1
    assert len(market.chain.ledger) == 1


async def test_a_killed_replicas_queued_orders_finish_elsewhere(
    pg_settings: Settings, market: SimulatedMarket
) -> None:
    for venue in market.venues.values():
        venue.faults.timeout = True  # `a` gets stuck quoting, as a hung replica would
    stuck = replica(pg_settings, "a", quote_timeout_ms=60_000.0, workers=1)
    async with running(stuck, market) as a:
        orders = [await a.engine.submit(REQUEST) for _ in range(5)]
        await reach(a, orders[0].order_id, {Status.ROUTING})
    for venue in market.venues.values():
        venue.faults.timeout = False
    async with running(replica(pg_settings, "b"), market) as b:
        for order in orders:
            assert await reach(b, order.order_id, TERMINAL) is Status.CONFIRMED
    assert len(market.chain.ledger) == 5


async def test_api_replicas_take_orders_and_workers_execute_them(
    pg_settings: Settings, market: SimulatedMarket
) -> None:
    require_redis()
    shared = pg_settings.replace(hub={"redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0"})
    async with (
        running(replica(shared, "w1", role="worker"), market) as w1,
        running(replica(shared, "w2", role="worker"), market),
        running(replica(shared, "api", role="api"), market) as api,
    ):
        orders = [await api.engine.submit(REQUEST) for _ in range(20)]
        # The API replica hears the workers' events through Redis.
        for order in orders:
            assert await reach(api, order.order_id, TERMINAL) is Status.CONFIRMED
            assert (await history(w1, order.order_id)).count(Status.SUBMITTED) == 1
    assert len(market.chain.ledger) == 20


async def test_an_idle_worker_is_woken_by_notify_not_by_its_poll(
    pg_settings: Settings, market: SimulatedMarket
) -> None:
    require_redis()
    shared = pg_settings.replace(hub={"redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0"})
    # Polls once a minute and leases for five: only the notification can wake it in time.
    slow = {"role": "worker", "claim_interval_ms": 60_000.0, "lease_s": 300.0}
    async with (
        running(replica(shared, "w", **slow), market),
        running(replica(shared, "api", role="api"), market) as api,
    ):
        order = await api.engine.submit(REQUEST)
        assert await reach(api, order.order_id, TERMINAL, timeout=10) is Status.CONFIRMED

"""Transactions in flight: the `max_in_flight` cap holds on every path, and a graceful stop
waits for the confirmations under way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from order_engine.config import Settings
from order_engine.engine import Engine
from order_engine.hub import MemoryHub
from order_engine.orders import Status, Transition
from order_engine.store import StoreError
from order_engine.venues import SimulatedMarket
from tests.support.engines import reach
from tests.support.factories import make_settings, order_request
from tests.support.faulty_store import FaultyStore


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # One transaction in flight at a time, and one attempt: a failed build fails the order.
    return make_settings(tmp_path, engine={"max_in_flight": 1, "max_attempts": 1})


def status_is(status: Status) -> Callable[[Transition], bool]:
    def match(transition: Transition) -> bool:
        return transition.event.status is status

    return match


async def test_a_failed_write_after_a_failed_build_does_not_raise_the_cap(
    engine: Engine, faulty_store: FaultyStore, memory_hub: MemoryHub, market: SimulatedMarket
) -> None:
    # The build fails (nothing sent), and so does writing `failed`: the order is resumed
    # from the store and goes on. The slot taken for that build must come back once only.
    market.chain.fail_next_builds(1)
    fault = faulty_store.faults.fail_next(
        "append", StoreError("disk"), when=status_is(Status.FAILED)
    )
    first = await engine.submit(order_request())
    await fault.wait()
    assert await reach(faulty_store, memory_hub, first.order_id, {Status.CONFIRMED})

    # With one slot, a second transaction waits while the first is in flight.
    market.chain.hold()
    a = await engine.submit(order_request())
    await reach(faulty_store, memory_hub, a.order_id, {Status.SUBMITTED})
    b = await engine.submit(order_request())
    await reach(faulty_store, memory_hub, b.order_id, {Status.BUILDING})
    with pytest.raises(TimeoutError):
        await reach(faulty_store, memory_hub, b.order_id, {Status.SUBMITTED}, timeout=0.3)
    market.chain.release()
    assert await reach(faulty_store, memory_hub, a.order_id, {Status.CONFIRMED})
    assert await reach(faulty_store, memory_hub, b.order_id, {Status.CONFIRMED})


async def test_a_stop_waits_for_a_submitted_write_and_the_confirmation_after_it(
    engine: Engine, faulty_store: FaultyStore, memory_hub: MemoryHub
) -> None:
    # The order's `submitted` is being written (off the worker, in the order's own
    # confirmation task) when the stop begins: that task gets the grace, and the order
    # lands as confirmed.
    hold = faulty_store.faults.hold_next("append", when=status_is(Status.SUBMITTED))
    order = await engine.submit(order_request())
    await hold.wait()
    stopping = asyncio.create_task(engine.stop(grace=5))
    await asyncio.sleep(0)  # one turn of the loop: the stop runs until it waits for stages
    assert not engine.accepting
    hold.release()
    await stopping
    stored = await faulty_store.get(order.order_id)
    assert stored is not None
    assert stored.status is Status.CONFIRMED

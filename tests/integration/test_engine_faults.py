"""The engine driven directly over a real store that fails on chosen calls."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from order_engine.engine import Engine
from order_engine.hub import MemoryHub
from order_engine.orders import TERMINAL, Order, OrderEvent, Status, Transition
from order_engine.store import StoreError
from tests.support.engines import history, reach
from tests.support.factories import order_request
from tests.support.faulty_store import STORE_METHODS, FaultyStore


def routing(transition: Transition) -> bool:
    return transition.event.status is Status.ROUTING


async def test_a_failed_routing_write_is_resumed_from_the_store_and_confirmed(
    engine: Engine, faulty_store: FaultyStore, memory_hub: MemoryHub
) -> None:
    fault = faulty_store.faults.fail_next("append", StoreError("disk"), when=routing)
    order = await engine.submit(order_request())
    await fault.wait()
    # The engine does not trust its own copy after a failed write: it reads the order back.
    await faulty_store.faults.wait_for_call("get", when=lambda order_id: order_id == order.order_id)
    final = await reach(faulty_store, memory_hub, order.order_id, TERMINAL)
    assert final is Status.CONFIRMED
    # The failed write left nothing behind: the history has each stage once, gap-free.
    assert await history(faulty_store, order.order_id) == [
        Status.PENDING,
        Status.ROUTING,
        Status.BUILDING,
        Status.SUBMITTED,
        Status.CONFIRMED,
    ]
    assert faulty_store.faults.count("append", when=routing) == 2
    assert [e.seq for e in await faulty_store.events(order.order_id)] == [1, 2, 3, 4, 5]


def new_order(n: int) -> tuple[Order, OrderEvent]:
    order_id = f"00000000-0000-4000-8000-{n:012d}"
    order = Order(order_id, "SOL", "USDC", 10**9, 50, Status.PENDING, 1, 0, 1.0, 1.0)
    return order, OrderEvent(order_id, 1, Status.PENDING, "queued", 1.0, {})


async def test_a_write_whose_reply_was_lost_has_committed_all_the_same(
    faulty_store: FaultyStore,
) -> None:
    order, first = new_order(1)
    fault = faulty_store.faults.fail_next("create", StoreError("reply lost"), lost_reply=True)
    with pytest.raises(StoreError, match="reply lost"):
        await faulty_store.create(order, first)
    assert fault.fired.is_set()
    assert await faulty_store.get(order.order_id) == order


async def test_an_outage_lasts_until_removed_and_a_held_call_waits(
    faulty_store: FaultyStore,
) -> None:
    order, first = new_order(2)
    await faulty_store.create(order, first)
    outage = faulty_store.faults.fail_always("get", StoreError("down"))
    for _ in range(3):
        with pytest.raises(StoreError):
            await faulty_store.get(order.order_id)
    faulty_store.faults.remove(outage)
    assert await faulty_store.get(order.order_id) == order
    assert faulty_store.faults.count("get") == 4

    hold = faulty_store.faults.hold_next("events")
    reading = asyncio.create_task(faulty_store.events(order.order_id))
    call = await hold.wait()
    assert call.args == (order.order_id, 0)
    assert not reading.done()
    hold.release()
    assert await asyncio.wait_for(reading, 5) == [first]


def test_the_faulty_store_forwards_every_method_of_the_store_protocol() -> None:
    own = {name for name in vars(FaultyStore) if not name.startswith("_")}
    assert STORE_METHODS - own == set()
    assert "owner" in own


async def test_a_long_write_outage_backs_off_and_is_logged_once(
    engine: Engine,
    faulty_store: FaultyStore,
    memory_hub: MemoryHub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk: each failed write waits twice as long as the last before the order is
    tried again (5, 10, 20 ms with the test's retry base), the outage is a warning when it
    begins and one when it ends, and the order then finishes."""
    outage = faulty_store.faults.fail_always("append", StoreError("disk full"), when=routing)
    order = await engine.submit(order_request())
    faults = faulty_store.faults
    await faults.wait_for_call("append", when=lambda _: faults.count("append") >= 4)
    faults.remove(outage)
    assert await reach(faulty_store, memory_hub, order.order_id, TERMINAL) is Status.CONFIRMED
    tries = [c.at for c in faults.calls if c.method == "append"][:4]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    for gap, least in zip(gaps, (0.005, 0.010, 0.020), strict=True):
        assert gap >= least, gaps
    said = [r.getMessage() for r in caplog.records if "store writes" in r.getMessage()]
    assert len(said) == 2 and "failing" in said[0] and "succeed again" in said[1], said

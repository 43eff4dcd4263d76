"""Workers route and build; the write of `submitted` and the wait on the chain run off them,
so a worker never idles on the disk or the chain while orders queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from order_engine.config import Settings
from order_engine.engine import Engine
from order_engine.hub import MemoryHub
from order_engine.orders import Status
from tests.integration.test_engine_in_flight import status_is
from tests.support.engines import reach
from tests.support.factories import make_settings, order_request
from tests.support.faulty_store import FaultyStore


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, engine={"workers": 1})


async def test_the_one_worker_goes_on_while_an_orders_submitted_write_is_held(
    engine: Engine, faulty_store: FaultyStore, memory_hub: MemoryHub
) -> None:
    hold = faulty_store.faults.hold_next("append", when=status_is(Status.SUBMITTED))
    first = await engine.submit(order_request())
    await hold.wait()
    # The only worker built `first` and handed it over: it takes the next order, which
    # is sent and lands while `first`'s write is still on its way to the disk.
    second = await engine.submit(order_request())
    assert await reach(faulty_store, memory_hub, second.order_id, {Status.CONFIRMED})
    stored = await faulty_store.get(first.order_id)
    assert stored is not None and stored.tx_hash is None  # not yet stored as submitted
    hold.release()
    assert await reach(faulty_store, memory_hub, first.order_id, {Status.CONFIRMED})

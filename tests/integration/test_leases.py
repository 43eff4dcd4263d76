"""Ownership: leases, claims and fenced writes, on both stores (two replicas on PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from order_engine.orders import OrderUpdate, Status, Transition
from order_engine.store import SeqConflict, Store, store_from_url
from tests.integration.test_store import event, new_order
from tests.support.services import postgres_schema

OpenStore = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["sqlite", "postgres"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """`await replicas(owner, lease_s=...)`: a store of replica `owner`, all on one database."""
    async with AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path}/store.db"
        else:
            url = await stack.enter_async_context(postgres_schema())

        async def open_store(owner: str, lease_s: float = 30.0) -> Store:
            store = store_from_url(url, sqlite_synchronous="NORMAL", owner=owner, lease_s=lease_s)
            await store.open()
            stack.push_async_callback(store.close)
            return store

        yield open_store


def routing(order_id: str) -> Transition:
    return Transition(event(order_id, 2, Status.ROUTING, attempt=1), OrderUpdate(attempts=1))


async def test_an_owned_order_is_written_only_by_its_owner(replicas: OpenStore) -> None:
    a, b = await replicas("a"), await replicas("b")
    order, first = new_order()
    await a.create(order, first)
    with pytest.raises(SeqConflict):
        await b.append(routing(order.order_id))
    await a.append(routing(order.order_id))
    stored = await a.get(order.order_id)
    assert stored is not None and stored.status is Status.ROUTING


async def test_an_unowned_order_is_claimed_then_executable(replicas: OpenStore) -> None:
    api, worker = await replicas("api"), await replicas("worker")
    order, first = new_order()
    await api.create(order, first, owned=False)
    with pytest.raises(SeqConflict):  # nobody owns it yet: nobody may execute it
        await worker.append(routing(order.order_id))
    assert [o.order_id for o in await worker.claim(10)] == [order.order_id]
    assert await worker.claim(10) == []  # already mine: not claimed twice
    await worker.append(routing(order.order_id))


async def test_claims_are_oldest_first_and_limited(replicas: OpenStore) -> None:
    api, worker = await replicas("api"), await replicas("worker")
    for n in (3, 1, 2):
        await api.create(*new_order(n), owned=False)
    claimed = await worker.claim(2)
    assert [o.created_at for o in claimed] == [1001.0, 1002.0]


async def test_finished_orders_are_never_claimed(replicas: OpenStore) -> None:
    a = await replicas("a", lease_s=0)
    order, first = new_order()
    await a.create(order, first)
    await a.append(Transition(event(order.order_id, 2, Status.FAILED), OrderUpdate()))
    b = await replicas("b")
    assert await b.claim(10) == []


async def test_an_expired_lease_is_taken_over_and_the_old_owner_fenced(
    replicas: OpenStore,
) -> None:
    a = await replicas("a", lease_s=0)  # expires at once: as if `a` stopped renewing
    b = await replicas("b")
    order, first = new_order()
    await a.create(order, first)
    assert [o.order_id for o in await b.claim(10)] == [order.order_id]
    with pytest.raises(SeqConflict):
        await a.append(routing(order.order_id))
    await b.append(routing(order.order_id))


async def test_released_orders_are_claimable_at_once(replicas: OpenStore) -> None:
    a, b = await replicas("a"), await replicas("b")
    for n in range(3):
        await a.create(*new_order(n))
    assert await a.release() == 3
    assert len(await b.claim(10)) == 3


async def test_a_restart_with_the_same_id_takes_its_orders_back(replicas: OpenStore) -> None:
    before = await replicas("stable")
    await before.create(*new_order())
    after = await replicas("stable")
    assert await after.claim(10) == []  # own orders come back only when asked
    assert len(await after.claim(10, own_too=True)) == 1


# One process per SQLite file: there, any other owner is a dead process and concurrent
# claimers do not exist. These two are PostgreSQL's alone.
@pytest.mark.parametrize("replicas", ["postgres"], indirect=True)
async def test_a_live_lease_is_respected(replicas: OpenStore) -> None:
    a, b = await replicas("a"), await replicas("b")
    order, first = new_order()
    await a.create(order, first)
    assert await a.renew([order.order_id, "00000000-0000-4000-8000-999999999999"]) == 1
    assert await b.claim(10) == []


@pytest.mark.parametrize("replicas", ["postgres"], indirect=True)
async def test_only_the_orders_named_are_renewed(replicas: OpenStore) -> None:
    """A replica renews what it works on: an order it dropped is free once its lease ends."""
    a = await replicas("a", lease_s=0)
    kept, dropped = new_order(1), new_order(2)
    for order, first in (kept, dropped):
        await a.create(order, first)
    a_again = await replicas("a", lease_s=60)
    assert await a_again.renew([kept[0].order_id]) == 1
    b = await replicas("b")
    assert [o.order_id for o in await b.claim(10)] == [dropped[0].order_id]


@pytest.mark.parametrize("replicas", ["postgres"], indirect=True)
async def test_concurrent_claimers_never_share_an_order(replicas: OpenStore) -> None:
    api = await replicas("api")
    for n in range(60):
        await api.create(*new_order(n), owned=False)
    workers = [await replicas(f"w{i}") for i in range(4)]
    rounds = await asyncio.gather(*(w.claim(20) for w in workers for _ in range(2)))
    claimed = [o.order_id for r in rounds for o in r]
    assert len(claimed) == len(set(claimed)) == 60

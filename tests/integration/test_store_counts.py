"""Store.count_by_status, on both backends: what GET /api/stats reports by status."""

from __future__ import annotations

from order_engine.orders import OrderUpdate, Status, Transition
from order_engine.store import Store
from tests.integration.test_store import event, new_order


async def test_orders_are_counted_by_their_current_status(store: Store) -> None:
    assert await store.count_by_status() == {}
    for n in range(4):
        order, first = new_order(n)
        await store.create(order, first)
    for n in (1, 2):
        order_id = new_order(n)[0].order_id
        await store.append(Transition(event(order_id, 2, Status.ROUTING), OrderUpdate(attempts=1)))
    await store.append(Transition(event(new_order(2)[0].order_id, 3, Status.FAILED)))
    await store.append(
        Transition(event(new_order(3)[0].order_id, 2, Status.CANCELLED), any_owner=True)
    )
    counts = await store.count_by_status()
    assert counts == {"pending": 1, "routing": 1, "failed": 1, "cancelled": 1}
    assert all(type(n) is int for n in counts.values())

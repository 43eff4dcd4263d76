"""The in-process hub's memory of recent orders' events: it answers only for an order whose
events it saw whole from seq 1, and otherwise leaves the answer to the store."""

from __future__ import annotations

from order_engine.hub import MemoryHub
from order_engine.hub.base import RecentEvents
from order_engine.orders import OrderEvent, Status

A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"
C = "00000000-0000-4000-8000-00000000000c"


def event(order_id: str, seq: int) -> OrderEvent:
    return OrderEvent(order_id, seq, Status.ROUTING, "m", 1.0, {"attempt": seq})


def test_an_order_seen_from_seq_1_is_answered_after_any_seq_it_has() -> None:
    recent = RecentEvents(10)
    for seq in (1, 2, 3):
        recent.add(event(A, seq))
    assert recent.after(A, 0) == [event(A, 1), event(A, 2), event(A, 3)]
    assert recent.after(A, 2) == [event(A, 3)]
    # Nothing after the last one known: whether it ended is the store's to say.
    assert recent.after(A, 3) is None
    assert recent.after(A, 7) is None


def test_an_order_first_seen_past_seq_1_is_left_to_the_store() -> None:
    recent = RecentEvents(10)
    recent.add(event(A, 2))  # resumed after a restart, say
    recent.add(event(A, 3))
    assert recent.after(A, 0) is None


def test_a_gap_forgets_the_order_and_a_repeat_is_ignored() -> None:
    recent = RecentEvents(10)
    recent.add(event(A, 1))
    recent.add(event(A, 1))
    assert recent.after(A, 0) == [event(A, 1)]
    recent.add(event(A, 3))
    assert recent.after(A, 0) is None
    recent.add(event(A, 4))
    assert recent.after(A, 0) is None


def test_only_the_most_recent_orders_are_kept() -> None:
    recent = RecentEvents(2)
    for order_id in (A, B, C):
        recent.add(event(order_id, 1))
    assert recent.after(A, 0) is None
    assert recent.after(B, 0) == [event(B, 1)]
    assert recent.after(C, 0) == [event(C, 1)]


async def test_the_memory_hub_answers_with_what_it_published() -> None:
    hub = MemoryHub(recent_orders=10)
    await hub.publish(event(A, 1))
    await hub.publish(event(A, 2))
    assert hub.recent(A, 0) == [event(A, 1), event(A, 2)]
    assert hub.recent(B, 0) is None

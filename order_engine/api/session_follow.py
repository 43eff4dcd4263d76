"""Following one order on a trading session, as the status stream does (api/ws.py).

The session subscribes to the hub BEFORE it reads the store. Every event is committed before
it is published, so any event is either in what the store returned or arrives through the
subscription (or both: duplicates are dropped by seq). A gap in seq, an overflowing inbox or
a hub outage sends the follower back to the store for what it missed. No sleeps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from order_engine.api.errors import ApiError
from order_engine.api.session_frames import event_frame, not_found
from order_engine.hub import Hub
from order_engine.hub.base import Subscription
from order_engine.orders import OrderEvent
from order_engine.store import Store


class Following:
    """An order a session took on: subscribed to the hub from `start` (before the store is
    read) until `stop`; `after` is the last seq the client has, `history` what the store had
    after it (None: not read yet). Thousands may be followed at once: it keeps nothing else."""

    __slots__ = ("_subscribed", "after", "history", "order_id", "sub")

    def __init__(
        self,
        order_id: str,
        after: int,
        sub: Subscription,
        subscribed: AbstractAsyncContextManager[Subscription],
    ) -> None:
        self.order_id = order_id
        self.after = after
        self.sub = sub
        self.history: list[OrderEvent] | None = None
        self._subscribed = subscribed

    @classmethod
    async def start(cls, hub: Hub, order_id: str, after: int) -> Following:
        subscribed = hub.subscribe(order_id)
        sub = await subscribed.__aenter__()
        return cls(order_id, after, sub, subscribed)

    async def stop(self) -> None:
        await self._subscribed.__aexit__(None, None, None)


async def watched_history(
    store: Store, hub: Hub, order_id: str, after: int, client: str | None
) -> list[OrderEvent] | None:
    """What the store (or the hub, when it knows) has of the order after `after`, or None
    when it ended at `after` (nothing more will come). Another client's order is unknown:
    ids cannot be probed."""
    order = None
    if client is not None:
        order = await store.get(order_id)
        if order is None or order.client_id != client:
            raise not_found(order_id)
    history = hub.recent(order_id, after) or await store.events(order_id, after)
    if history:
        return history
    order = order or await store.get(order_id)
    if order is None:
        raise not_found(order_id)
    if order.last_seq < after:
        # No client saw this seq (events are stored before anyone sees them): waiting for
        # it would wait forever.
        raise ApiError(
            400,
            "invalid_after",
            f"after={after} is beyond the order's last event (seq {order.last_seq})",
            "after",
        )
    return None if order.terminal else history


async def follow_order(
    store: Store, hub: Hub, f: Following, push: Callable[[str], Awaitable[None]]
) -> None:
    """The order's events after `f.after`, each once, in seq order, to its terminal one."""
    order_id, sub, last = f.order_id, f.sub, f.after
    history, f.history = f.history, None
    if history is None:
        # A submitted order: the hub knows its events from seq 1, unless many came since.
        history = hub.recent(order_id, last) or await store.events(order_id, last)
    for event in history:
        await push(event_frame(event))
        last = event.seq
        if event.terminal:
            return
    del history  # an order may be followed for days: its history is sent, not kept
    sub.position = last
    while True:
        incoming = await sub.next()
        if incoming is not None and incoming.seq <= last:
            continue  # sent from the store already
        if incoming is None or incoming.seq > last + 1:
            # Lagged or a gap: the store has everything committed, in order.
            catch_up = await store.events(order_id, last)
        else:
            catch_up = [incoming]
        for event in catch_up:
            await push(event_frame(event))
            last = event.seq
            if event.terminal:
                return
        sub.position = last

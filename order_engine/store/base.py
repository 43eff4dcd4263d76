"""The storage contract every backend keeps (SQLite embedded, PostgreSQL scaled out)."""

from __future__ import annotations

from typing import Protocol

from order_engine.orders import Order, OrderEvent, Transition


class StoreError(Exception):
    """The store cannot serve the request right now (unreachable, closed)."""


class SeqConflict(StoreError):
    """The event's seq is not the order's next one: another writer got there first."""

    def __init__(self, order_id: str, seq: int) -> None:
        super().__init__(f"order {order_id}: seq {seq} is not the next one")
        self.order_id = order_id
        self.seq = seq


class DuplicateOrder(StoreError):
    """An order with this id or idempotency key exists already."""

    def __init__(self, existing: Order) -> None:
        super().__init__(f"order {existing.order_id} exists already")
        self.existing = existing


class Store(Protocol):
    async def open(self) -> None:
        """Connect and run migrations."""
        ...

    async def close(self) -> None:
        """Finish queued writes, then disconnect."""
        ...

    async def create(self, order: Order, first: OrderEvent) -> None:
        """Insert the order and its pending event (seq 1) in one transaction; committed when
        this returns. Raises DuplicateOrder if the id or idempotency key is taken."""
        ...

    async def append(self, transition: Transition) -> None:
        """Insert the event and update the order's status and columns in one transaction;
        committed when this returns. Raises SeqConflict unless event.seq == last_seq + 1."""
        ...

    async def get(self, order_id: str) -> Order | None: ...

    async def by_idempotency_key(self, key: str) -> Order | None: ...

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        """The order's events with seq > after, in seq order."""
        ...

    async def unfinished(self) -> list[Order]:
        """Every order not yet confirmed or failed, oldest first (crash recovery)."""
        ...

    async def ping(self) -> None:
        """Raise StoreError if the store cannot answer."""
        ...

"""The storage contract every backend keeps (SQLite embedded, PostgreSQL scaled out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from order_engine.orders import Order, OrderEvent, Status, Transition


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """Filters of the order history, newest first. `before` is the keyset cursor: the
    (created_at, order_id) of the last order of the previous page, so pages stay stable
    however many orders arrive meanwhile."""

    statuses: tuple[Status, ...] = ()
    token_in: str | None = None
    token_out: str | None = None
    created_from: float | None = None  # inclusive, epoch seconds
    created_to: float | None = None  # exclusive
    client_id: str | None = None
    before: tuple[float, str] | None = None
    limit: int = 100


class StoreUnavailable(Exception):
    """The store cannot serve the request right now (unreachable, closed). Nothing is wrong
    with the request: the same call may succeed once the store is back."""


# The name outage handlers have always caught, kept for them: the same class, and no
# conflict is one.
StoreError = StoreUnavailable


class StoreConflict(Exception):
    """The store answered and refused the write: it breaks a rule of the stored data.
    Repeating the same write is refused again, as a rule: the caller reads what is stored
    now. Not an outage, so `except StoreError` never swallows one."""


class SeqConflict(StoreConflict):
    """The write is fenced off: the event's seq is not the order's next one, or another
    replica owns the order now (this one's lease expired and was taken over)."""

    def __init__(self, order_id: str, seq: int) -> None:
        super().__init__(f"order {order_id}: seq {seq} is not the next one")
        self.order_id = order_id
        self.seq = seq


class DuplicateOrder(StoreConflict):
    """An order with this id or idempotency key exists already."""

    def __init__(self, existing: Order) -> None:
        super().__init__(f"order {existing.order_id} exists already")
        self.existing = existing


class Store(Protocol):
    """Every method raises StoreUnavailable when the store cannot answer; writes that break
    a rule raise a StoreConflict (SeqConflict, DuplicateOrder) instead."""

    async def open(self) -> None:
        """Connect and run migrations."""
        ...

    async def close(self) -> None:
        """Finish queued writes, then disconnect."""
        ...

    @property
    def owner(self) -> str:
        """This replica's id: the owner written on the orders it works on."""
        ...

    async def create(self, order: Order, first: OrderEvent, *, owned: bool = True) -> None:
        """Insert the order and its pending event (seq 1) in one transaction; committed when
        this returns. `owned`: leased to this replica (it executes the order); otherwise
        left for a worker to claim. Raises DuplicateOrder if the id or idempotency key is
        taken."""
        ...

    async def append(self, transition: Transition) -> None:
        """Insert the event and update the order's status and columns in one transaction;
        committed when this returns. Raises SeqConflict unless event.seq == last_seq + 1
        and this replica owns the order."""
        ...

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        """Lease to this replica up to `limit` unfinished orders that nobody holds (no owner,
        or an expired lease), oldest first; `own_too` also takes back orders leased to this
        replica's id (a restart with a stable id). Concurrent claimers never get the same
        order."""
        ...

    async def renew(self, order_ids: list[str]) -> int:
        """Extend the leases of these orders, those this replica still owns; returns how
        many. (Only the orders it works on: one it dropped must be free to take.)"""
        ...

    async def release(self) -> int:
        """Give up every unfinished order this replica owns (graceful stop), so another
        replica can take them at once; returns how many."""
        ...

    async def get(self, order_id: str) -> Order | None: ...

    async def by_idempotency_key(self, key: str) -> Order | None: ...

    async def forget_idempotency_key(self, key: str) -> None:
        """Free an expired key for reuse (its order stays)."""
        ...

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        """The order's events with seq > after, in seq order."""
        ...

    async def find(self, query: OrderQuery) -> list[Order]:
        """Orders matching the query, newest first (created_at, then order_id, descending)."""
        ...

    async def last_seqs(self, order_ids: list[str]) -> dict[str, int]:
        """The stored last seq of each of these orders (unknown ids are left out)."""
        ...

    async def count_by_status(self) -> dict[str, int]:
        """How many orders are in each status, every client's (statuses without an order
        are left out)."""
        ...

    async def unfinished(self) -> list[Order]:
        """Every order not yet confirmed or failed, oldest first (crash recovery)."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot answer."""
        ...

    def observe_batches(self, callback: Callable[[int], None]) -> None:
        """Call `callback(size)` after each committed write batch (metrics)."""
        ...

    async def on_new_orders(self, callback: Callable[[], None]) -> None:
        """Call `callback` when an order nobody owns is stored (wakes idle claimers)."""
        ...

"""The order domain: statuses, the one transition table, orders and their events.

Imports nothing of the project: the engine, the stores and the API all speak these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class OrderType(StrEnum):
    MARKET = "market"  # executes at once, at the best route's price
    LIMIT = "limit"  # armed until the best route pays at least its limit price
    SNIPER = "sniper"  # armed until its token becomes tradable


class Status(StrEnum):
    PENDING = "pending"
    OPEN = "open"  # armed: a limit or sniper order waiting for its trigger
    ROUTING = "routing"
    BUILDING = "building"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


TERMINAL: frozenset[Status] = frozenset(
    {Status.CONFIRMED, Status.FAILED, Status.CANCELLED, Status.EXPIRED}
)
# A client may cancel an order until its execution begins.
CANCELLABLE: frozenset[Status] = frozenset({Status.PENDING, Status.OPEN})

# Every legal move, and nothing else. Any non-terminal status may fail.
TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.PENDING, Status.ROUTING),
        # Limit and sniper orders are armed first, and fire into routing.
        (Status.PENDING, Status.OPEN),
        (Status.OPEN, Status.ROUTING),
        (Status.PENDING, Status.CANCELLED),
        (Status.OPEN, Status.CANCELLED),
        (Status.OPEN, Status.EXPIRED),
        # A fired order that cannot fill at its limit, or whose transaction failed for a
        # transient reason, is armed again: it fires when the market crosses again.
        (Status.ROUTING, Status.OPEN),
        (Status.BUILDING, Status.OPEN),
        (Status.SUBMITTED, Status.OPEN),
        (Status.ROUTING, Status.BUILDING),
        (Status.BUILDING, Status.SUBMITTED),
        (Status.SUBMITTED, Status.CONFIRMED),
        # Retries go back to routing with fresh quotes: the market moved. From routing itself
        # (no venue answered), from building (a leg could not be built) and from submitted
        # (dropped, expired, or slippage exceeded when the transaction landed).
        (Status.ROUTING, Status.ROUTING),
        (Status.BUILDING, Status.ROUTING),
        (Status.SUBMITTED, Status.ROUTING),
    }
    | {(s, Status.FAILED) for s in Status if s not in TERMINAL}
)


class InvalidTransition(Exception):
    def __init__(self, current: Status | None, new: Status) -> None:
        super().__init__(f"illegal order transition {current or 'nothing'} -> {new}")
        self.current = current
        self.new = new


def check_transition(current: Status | None, new: Status) -> None:
    """The only judge of status changes. `None` is an order not yet created: it can only
    become pending."""
    if current is None:
        if new is not Status.PENDING:
            raise InvalidTransition(current, new)
        return
    if (current, new) not in TRANSITIONS:
        raise InvalidTransition(current, new)


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One stage of an order, exactly as stored and as sent to clients."""

    order_id: str
    seq: int  # 1 for pending, then +1 per event, gap-free
    status: Status
    message: str
    ts: float  # unix seconds
    data: dict[str, Any]

    def to_message(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "seq": self.seq,
            "status": self.status.value,
            "message": self.message,
            "ts": self.ts,
            "data": self.data,
        }

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class Order:
    """An order as stored. Amounts are integers in base units of their token."""

    order_id: str
    token_in: str  # registry symbol
    token_out: str
    amount: int  # base units of token_in
    slippage_bps: int
    status: Status
    last_seq: int
    attempts: int
    created_at: float
    updated_at: float
    client_order_id: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    dex: str | None = None
    tx_hash: str | None = None
    executed_price: float | None = None
    amount_out: int | None = None
    min_amount_out: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    client_id: str | None = None  # the API key's name, when authentication is on
    order_type: OrderType = OrderType.MARKET
    # Limit: the least token_out per one token_in (UI units), an exact decimal string.
    limit_price: str | None = None
    expires_at: float | None = None  # limit and sniper orders: epoch seconds
    # Sniper: the least liquidity (base units of token_in) the new pool must hold.
    min_liquidity: int | None = None
    # The last slot in which the transaction sent for the current attempt can still land:
    # until then an unseen transaction may yet arrive, so it is never sent again before.
    last_valid_slot: int | None = None
    # The replica leasing the order (None: nobody): lease bookkeeping, not order content.
    owner: str | None = field(default=None, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def apply(self, transition: Transition) -> Order:
        """The order once this transition happened: checked against the transition table and
        the seq order, as the store checks it, so the engine's copy never drifts from it."""
        event, update = transition.event, transition.update
        status, seq = self.status, self.last_seq
        for each in transition.events:
            check_transition(status, each.status)
            if each.order_id != self.order_id or each.seq != seq + 1:
                raise ValueError(
                    f"event {each.order_id}#{each.seq} does not follow {self.order_id}#{seq}"
                )
            status, seq = each.status, each.seq
        # Built positionally rather than by `dataclasses.replace` (under half its cost): this
        # runs for every event of every order.
        values = [getattr(self, name) for name in _ORDER_FIELDS]
        values[_STATUS], values[_LAST_SEQ], values[_UPDATED_AT] = event.status, event.seq, event.ts
        for name, at in _UPDATE_AT:
            value = getattr(update, name)
            if value is not None:
                values[at] = value
        return Order(*values)


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """Columns of `orders` an event changes besides status/seq (None: leave as is)."""

    attempts: int | None = None
    dex: str | None = None
    tx_hash: str | None = None
    executed_price: float | None = None
    amount_out: int | None = None
    min_amount_out: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    last_valid_slot: int | None = None

    def then(self, later: OrderUpdate) -> OrderUpdate:
        """This update, then `later`: `later`'s value for every column it sets."""
        return OrderUpdate(
            *(
                theirs if (theirs := getattr(later, name)) is not None else getattr(self, name)
                for name in UPDATE_FIELDS
            )
        )


# The columns an event may change besides status and seq: every field of OrderUpdate.
UPDATE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(OrderUpdate))


@dataclass(frozen=True, slots=True)
class Transition:
    """An event to append and the order columns it changes, written in one transaction;
    with the `earlier` events of stages that took no time to speak of (a route quoted from
    the streamed pools, a transaction built), appended before it in the same transaction.
    The order's status and seq become the last event's; `update` holds every column any of
    them changes. The store checks the seq of the first one."""

    event: OrderEvent
    update: OrderUpdate = field(default_factory=OrderUpdate)
    # A cancellation is written whoever leases the order (or nobody does): the seq check
    # alone fences it, so it races the owner's next write and exactly one of them wins.
    any_owner: bool = False
    earlier: tuple[OrderEvent, ...] = ()

    @property
    def events(self) -> tuple[OrderEvent, ...]:
        """Every event it appends, in seq order."""
        return (*self.earlier, self.event) if self.earlier else (self.event,)

    @property
    def after_seq(self) -> int:
        """The seq the stored order must be at for this transition to follow it."""
        return self.events[0].seq - 1


_ORDER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Order))
_STATUS, _LAST_SEQ, _UPDATED_AT = (
    _ORDER_FIELDS.index(n) for n in ("status", "last_seq", "updated_at")
)
# Where each update field goes among the order's positional arguments.
_UPDATE_AT: tuple[tuple[str, int], ...] = tuple((n, _ORDER_FIELDS.index(n)) for n in UPDATE_FIELDS)

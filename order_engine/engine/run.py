"""An order being worked on, as this process last wrote it."""

from __future__ import annotations

from dataclasses import dataclass, field

from order_engine.orders import Order, OrderEvent, OrderUpdate, Status
from order_engine.payloads import Trigger
from order_engine.venues.base import VenueError
from order_engine.venues.tokens import Token


@dataclass(slots=True)
class OrderRun:
    order: Order  # replaced by each committed transition (`Order.apply`)
    token_in: Token
    token_out: Token
    retry_reason: VenueError | None = None  # why the last attempt failed, until routing again
    trigger: Trigger | None = None  # what fired the armed order, until routing records it
    routing_recorded: bool = False  # the trigger wrote the routing event: a worker goes on
    # Stages that took no time to speak of, written with the next event (`Recorder.stage`):
    # not stored, not seen by anyone yet, and gone if the order stops here.
    staged: list[tuple[OrderEvent, OrderUpdate]] = field(default_factory=list)

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def status(self) -> Status:
        """As stored: a staged stage is not the order's status until it is written."""
        return self.order.status

"""An order being worked on, as this process last wrote it."""

from __future__ import annotations

from dataclasses import dataclass

from order_engine.orders import Order, Status
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

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def status(self) -> Status:
        return self.order.status

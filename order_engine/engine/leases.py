"""The orders this replica holds, and its leases on them.

Across replicas an engine works only on orders leased to it: it claims orders whose lease
expired (a dead replica's) or that nobody owns (taken by an API-only replica), renews its
leases while it lives, and gives them back when it stops. Every write is fenced on
ownership in the store, so a replica that lost an order stops touching it at its next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from order_engine.orders import Order
from order_engine.store import Store, StoreError

from .supervision import Supervisor

log = logging.getLogger("order_engine.engine")

UPKEEP = "leases"  # the supervisor's group of the lease upkeep task
EVERY_ORDER = 2**31 - 1


class Leases:
    def __init__(
        self,
        *,
        store: Store,
        supervisor: Supervisor,
        adopt: Callable[[Order], None],
        room: Callable[[], int],
        lease_s: float,
        claim_interval: float | None,
    ) -> None:
        """`adopt` takes a claimed order on; `room` says how many more it can take now.
        `claim_interval`: how often to look for orders nobody holds (None: never after
        start-up; one process on SQLite has nobody to take over from)."""
        self._store = store
        self._supervisor = supervisor
        self._adopt = adopt
        self._room = room
        self._lease_s = lease_s
        self._claim_interval = claim_interval
        self._held: set[str] = set()  # queued, being worked on, or awaiting the chain
        self._new_orders = asyncio.Event()

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._held

    def hold(self, order_id: str) -> None:
        self._held.add(order_id)

    def drop(self, order_id: str) -> None:
        self._held.discard(order_id)

    async def claim(self, *, own_too: bool = False, limit: int | None = None) -> int:
        """Lease unfinished orders nobody holds and take them on; returns how many."""
        claimed = [
            order
            for order in await self._store.claim(
                self._room() if limit is None else limit, own_too=own_too
            )
            if order.order_id not in self._held
        ]
        for order in claimed:
            self._held.add(order.order_id)
            self._adopt(order)
        return len(claimed)

    async def start(self) -> None:
        """Resume every unfinished order this replica may take, then keep the leases."""
        # However many: what exceeds the queue waits its turn.
        resumed = await self.claim(own_too=True, limit=EVERY_ORDER)
        if resumed:
            log.info("recovery: resuming %d unfinished order(s)", resumed)
        # Without claims (one process on SQLite) nobody else could take an order over:
        # leases need no upkeep.
        if self._claim_interval is not None:
            await self._store.on_new_orders(self._new_orders.set)
            self._supervisor.spawn(UPKEEP, self._upkeep(), "leases")

    async def _upkeep(self) -> None:
        """Renew this replica's leases well before they expire; take over orders nobody
        holds. A store outage is waited out: leases lapse, and fencing keeps it safe."""
        assert self._claim_interval is not None
        renew_every = self._lease_s / 3
        tick = min(renew_every, self._claim_interval)
        loop = asyncio.get_running_loop()
        next_renewal = loop.time() + renew_every
        while True:
            # Woken early when an API replica stores an order: claimed at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._new_orders.wait()
            self._new_orders.clear()
            try:
                if loop.time() >= next_renewal:
                    next_renewal = loop.time() + renew_every
                    await self._store.renew(list(self._held))
                taken = await self.claim()
                if taken:
                    log.info("claimed %d order(s) nobody was working on", taken)
            except StoreError as exc:
                log.warning("lease upkeep failed (%s); retrying", exc)
            except Exception:  # a bug must not stop the upkeep: leases would lapse
                log.exception("lease upkeep failed unexpectedly; retrying")

    async def stop(self) -> None:
        """No more claims: what is claimed while stopping would only be handed back."""
        await self._supervisor.cancel(UPKEEP)

    async def release(self) -> None:
        """Give every unfinished order back, so another replica can take them at once
        instead of waiting for the leases to expire."""
        try:
            released = await self._store.release()
        except StoreError as exc:
            log.warning("shutdown: leases not released (%s); they will expire", exc)
        else:
            if released:
                log.info("shutdown: released %d unfinished order(s)", released)

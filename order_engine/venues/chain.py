"""The simulated chain: signatures, landing latency, expiry, atomic execution, a ledger.

A transaction lands after a latency drawn from the profile. At landing every leg is re-run
against the pools as they are then (the market may have moved since the quote): if the legs
together pay less than `min_out` the whole transaction fails with `slippage_exceeded` and no
pool changes; otherwise every leg executes and the swap is recorded in the ledger. A dropped
transaction (its blockhash expired) never lands. The chain answers for every signature it
was sent, so a restarted engine learns the fate of what it submitted.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import base58

from order_engine.venues.base import (
    SLIPPAGE_EXCEEDED,
    TX_DROPPED,
    VENUE_DOWN,
    LegFill,
    Quote,
    Receipt,
    TransientVenueError,
    Tx,
    TxState,
    TxStatus,
)
from order_engine.venues.pool import DustAmount, PoolExhausted
from order_engine.venues.profiles import Profile
from order_engine.venues.venue import SimulatedVenue

SLOT_SECONDS = 0.4
_PENDING = TxStatus(TxState.PENDING)
_UNKNOWN = TxStatus(TxState.UNKNOWN)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    signature: str
    slot: int
    token_in: str
    token_out: str
    amount_in: int
    amount_out: int
    legs: tuple[LegFill, ...]


@dataclass(slots=True)
class _InFlight:
    tx: Tx
    dropped: bool


class SimulatedChain:
    def __init__(
        self,
        venues: Mapping[str, SimulatedVenue],
        profile: Profile,
        rng: random.Random,
    ) -> None:
        self._venues = venues
        self._profile = profile
        self._rng = rng
        self.slot = 0  # advances with time (see `current_slot`); tests may move it forward
        self._epoch = time.monotonic()
        self.ledger: list[LedgerEntry] = []
        self._statuses: dict[str, TxStatus] = {}
        self._in_flight: dict[str, _InFlight] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._receipts_awaited: dict[str, asyncio.Event] = {}
        self._forced_drops = 0
        self._failing_builds = 0
        self._held: list[str] | None = None
        # Called with its slot once a landed transaction's swaps are committed, before
        # anyone hears it landed, so that the pools' new state is published first.
        self.on_landed: Callable[[int], None] | None = None

    # -- the Chain protocol ------------------------------------------------------------

    async def build(self, legs: Sequence[Quote], min_out: int) -> Tx:
        if self._failing_builds > 0:
            self._failing_builds -= 1
            raise TransientVenueError(VENUE_DOWN, "the RPC node did not answer")
        if not legs:
            raise ValueError("a transaction needs at least one leg")
        if len({leg.venue for leg in legs}) != len(legs):
            # Legs are dry-run one by one against the same pools; two on one venue would
            # each see the pools before the other moved them.
            raise ValueError("a transaction holds at most one leg per venue")
        # 64 random bytes, as an ed25519 signature: unique across processes and restarts,
        # which a seeded generator would not be.
        return Tx(
            signature=base58.b58encode(os.urandom(64)).decode(),
            legs=tuple(legs),
            min_out=min_out,
            wrap_sol=legs[0].token_in.native,
            unwrap_sol=legs[0].token_out.native,
            last_valid_slot=self.current_slot() + self._profile.blockhash_validity_slots,
        )

    def current_slot(self) -> int:
        """Slots pass with time, as on chain, however many transactions land in each."""
        self.slot = max(self.slot, int((time.monotonic() - self._epoch) / SLOT_SECONDS))
        return self.slot

    async def submit(self, tx: Tx) -> str:
        if tx.signature in self._statuses:
            return tx.signature  # a resend of the same signed transaction lands at most once
        dropped = self.current_slot() > tx.last_valid_slot or self._draw_drop()
        self._statuses[tx.signature] = _PENDING
        self._in_flight[tx.signature] = _InFlight(tx, dropped)
        received = self._receipts_awaited.pop(tx.signature, None)
        if received is not None:
            received.set()
        low, high = self._profile.land_latency_ms
        delay = self._rng.uniform(low, high) / 1000 if high > 0 else 0.0
        asyncio.get_running_loop().call_later(delay, self._arrive, tx.signature)
        return tx.signature

    async def status(self, signature: str) -> TxStatus:
        return self._statuses.get(signature, _UNKNOWN)

    async def can_still_land(self, signature: str, last_valid_slot: int) -> bool:
        # In-process, nothing is in flight: what this chain has not seen was never sent.
        return False

    async def wait(self, signature: str, timeout: float) -> TxStatus:
        if self._statuses.get(signature) is _PENDING:
            waiter = self._waiters.get(signature)
            if waiter is None:
                waiter = self._waiters[signature] = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(waiter)
            except TimeoutError:
                pass
        return self._statuses.get(signature, _UNKNOWN)

    # -- test controls -----------------------------------------------------------------

    def hold(self) -> None:
        """Nothing lands until `release()`: freezes transactions in flight."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for signature in held:
            self._land(signature)

    async def received(self, signature: str, timeout: float) -> None:
        """Until the chain has been sent this signature (tests: the engine stores a
        signature before it sends the transaction)."""
        if signature in self._statuses:
            return
        event = self._receipts_awaited.setdefault(signature, asyncio.Event())
        async with asyncio.timeout(timeout):
            await event.wait()

    def fail_next_builds(self, count: int) -> None:
        """The next `count` builds fail as an unreachable RPC node would (nothing sent)."""
        self._failing_builds += count

    def drop_next(self, count: int) -> None:
        """The next `count` submitted transactions expire before landing."""
        self._forced_drops += count

    def landed_count(self, signature: str) -> int:
        return sum(1 for entry in self.ledger if entry.signature == signature)

    # -- landing -----------------------------------------------------------------------

    def _draw_drop(self) -> bool:
        if self._forced_drops > 0:
            self._forced_drops -= 1
            return True
        return self._profile.drop_rate > 0 and self._rng.random() < self._profile.drop_rate

    def _arrive(self, signature: str) -> None:
        if self._held is not None:
            self._held.append(signature)
        else:
            self._land(signature)

    def _land(self, signature: str) -> None:
        flight = self._in_flight.pop(signature)
        tx = flight.tx
        if flight.dropped:
            self._settle(
                signature,
                TxStatus(
                    TxState.FAILED,
                    error=TransientVenueError(
                        TX_DROPPED, "the blockhash expired before the transaction landed"
                    ),
                ),
            )
            return
        try:
            total, fillable = sum(self._leg_out(leg, commit=False) for leg in tx.legs), True
        except (PoolExhausted, DustAmount):
            # A leg the pools can no longer fill fails the whole transaction, even with a
            # zero minimum: committing it would raise half way through the legs.
            total, fillable = 0, False
        if not fillable or total < tx.min_out:
            token = tx.legs[0].token_out
            self._settle(
                signature,
                TxStatus(
                    TxState.FAILED,
                    error=TransientVenueError(
                        SLIPPAGE_EXCEEDED,
                        f"would receive {token.format(total)} {token.symbol}, "
                        f"below the minimum of {token.format(tx.min_out)}",
                    ),
                ),
            )
            return
        # Atomic: the dry run above succeeded against this same state, so every leg does.
        fills = tuple(
            LegFill(leg.venue, leg.amount_in, self._leg_out(leg, commit=True)) for leg in tx.legs
        )
        slot = self.current_slot()
        amount_in = sum(fill.amount_in for fill in fills)
        receipt = Receipt(signature, slot, amount_in, total, fills)
        self.ledger.append(
            LedgerEntry(
                signature,
                slot,
                tx.legs[0].token_in.symbol,
                tx.legs[0].token_out.symbol,
                amount_in,
                total,
                fills,
            )
        )
        if self.on_landed is not None:
            self.on_landed(slot)
        self._settle(signature, TxStatus(TxState.LANDED, receipt=receipt))

    def _leg_out(self, leg: Quote, *, commit: bool) -> int:
        return self._venues[leg.venue].execute(leg.hops, leg.amount_in, commit=commit)

    def _settle(self, signature: str, status: TxStatus) -> None:
        self._statuses[signature] = status
        waiter = self._waiters.pop(signature, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

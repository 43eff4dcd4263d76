"""The simulated chain: signatures, landing latency, expiry, atomic execution, a ledger.

A transaction lands after a latency drawn from the profile. At landing every leg is re-run
against the pools as they are then (the market may have moved since the quote): if the legs
together pay less than `min_out` the whole transaction fails with `slippage_exceeded` and no
pool changes; otherwise every leg executes and the swap is recorded in the ledger. A dropped
transaction (its blockhash expired) never lands. The chain answers for every signature it
was sent, so a restarted engine learns the fate of what it submitted.

It does not forget, as a real chain does not (`chain_state`): a transaction is recorded as
received before `submit` returns, and a landing (its ledger entry and the pools it moved)
is committed before anyone can see it, by a status query or on the account stream. So a
chain restarted on its file answers for every signature it ever settled and lands the ones
it had received, while their blockhash is still valid. Landings that come due together
are executed and committed as one batch. Only recent statuses stay in memory (the
blockhash window and a margin: what an engine still waiting may ask for); older ones are
read from the file.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from order_engine.venues.base import (
    SLIPPAGE_EXCEEDED,
    TX_DROPPED,
    VENUE_DOWN,
    LedgerEntry,
    LegFill,
    Quote,
    Receipt,
    TransientVenueError,
    Tx,
    TxState,
    TxStatus,
)
from order_engine.venues.chain_memory import Signatures
from order_engine.venues.chain_state import ChainBatch, ChainState, PoolRow, Settled
from order_engine.venues.pool import DustAmount, PoolExhausted
from order_engine.venues.profiles import Profile
from order_engine.venues.signatures import new_signature
from order_engine.venues.tokens import REGISTRY, TokenRegistry
from order_engine.venues.venue import SimulatedVenue

log = logging.getLogger("order_engine.venues")

SLOT_SECONDS = 0.4
# Settled statuses stay in memory this many slots beyond the blockhash window (an engine
# asks for its transaction's fate within that window; a restarted one, a little after), and
# at most this many of them (a busy chain settles thousands a minute): anything older is
# read from the state file, which answers for every signature.
KEEP_MARGIN_SLOTS = 150
MAX_REMEMBERED = 4096
# A commit that failed (disk full, I/O error) is tried again after this.
RETRY_COMMIT_S = 1.0
_UNKNOWN = TxStatus(TxState.UNKNOWN)

# The pools and market state to commit with a batch: a row for each pool changed since last
# asked (what changed of it), and the market's own state.
StateSource = Callable[[], tuple[list[PoolRow], dict[str, Any]]]

__all__ = ["SLOT_SECONDS", "LedgerEntry", "SimulatedChain"]


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
        state: ChainState | None = None,
    ) -> None:
        """`state`: where the chain keeps its history (default: in memory, for tests)."""
        self._venues = venues
        self._profile = profile
        self._rng = rng
        self._state = ChainState() if state is None else state
        self.slot = 0  # advances with time (see `current_slot`); tests may move it forward
        self._epoch = time.monotonic()
        self.keep_slots = profile.blockhash_validity_slots + KEEP_MARGIN_SLOTS
        self.max_remembered = MAX_REMEMBERED
        self._signatures = Signatures()
        self._in_flight: dict[str, _InFlight] = {}
        self._receiving: dict[str, asyncio.Future[None]] = {}  # sent, not yet recorded
        self._batch = ChainBatch()
        self._batch_done: asyncio.Future[None] | None = None
        self._arrivals: list[str] = []
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._receipts_awaited: dict[str, asyncio.Event] = {}
        self._forced_drops = 0
        self._failing_builds = 0
        self._held: list[str] | None = None
        self._landing: dict[str, asyncio.TimerHandle] = {}  # on their way to landing
        # Called with its slot once a batch's landings are committed, before anyone hears
        # they landed, so that the pools' new state is published first.
        self.on_landed: Callable[[int], None] | None = None
        # Asked at every commit for the market's changed pools and state.
        self.state_source: StateSource | None = None

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
        signature = new_signature()
        self._signatures.built(signature)
        return Tx(
            signature=signature,
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
        """Returns once the chain has recorded the transaction as received: from then on
        it lands (or fails) whatever happens to this process."""
        signature = tx.signature
        recording = self._receiving.get(signature)
        if recording is None:
            # A resend of the same signed transaction lands at most once, however long ago
            # the first one settled (no longer in memory, still on chain). One built here
            # and never sent before was never seen: no need to look (a read of the file).
            if not self._signatures.first_send(signature) and self._ever_received(signature):
                return signature
            expired = self.current_slot() > tx.last_valid_slot
            self._batch.received.append((tx, expired or self._draw_drop()))
            recording = self._receiving[signature] = self._batch_future()
            self._schedule_flush()
        await asyncio.shield(recording)
        return signature

    async def status(self, signature: str) -> TxStatus:
        return self._known(signature)

    async def can_still_land(self, signature: str, last_valid_slot: int) -> bool:
        # In-process, nothing is in flight: what this chain has not seen was never sent.
        return False

    async def wait(self, signature: str, timeout: float) -> TxStatus:
        if self._signatures.pending(signature):
            waiter = self._waiters.get(signature)
            if waiter is None:
                waiter = self._waiters[signature] = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(waiter)
            except TimeoutError:
                pass
        return self._known(signature)

    # -- durability ----------------------------------------------------------------------

    def restore_clock(self, meta: Mapping[str, Any]) -> None:
        """Go on from the slot a stored state was committed at, as if the chain had run on
        meanwhile: slots are wall time on a real chain, and so blockhashes expire while a
        chain is down."""
        clock = meta.get("clock")
        if not isinstance(clock, Mapping):
            return
        stopped = max(0.0, time.time() - float(clock["wall"]))
        slot = max(self.current_slot(), int(clock["slot"]) + int(stopped / SLOT_SECONDS))
        self.slot = slot
        self._epoch = time.monotonic() - slot * SLOT_SECONDS

    def resume(self, registry: TokenRegistry = REGISTRY) -> int:
        """Land the transactions the state file holds as received (a restart); those whose
        blockhash has expired meanwhile fail as dropped. How many."""
        resumed = 0
        for tx, dropped in self._state.pending(registry):
            if tx.signature in self._signatures:
                continue
            self._in_flight[tx.signature] = _InFlight(tx, dropped)
            self._signatures.received(tx.signature)
            self._arrive_later(tx.signature)
            resumed += 1
        return resumed

    def checkpoint(self) -> None:
        """Commit the market's changed state soon (with whatever else is due)."""
        self._schedule_flush()

    def flush(self) -> None:
        """Commit what is due now (the market stopping)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    @property
    def remembered(self) -> int:
        """Signatures whose status is held in memory (received, or recently settled)."""
        return len(self._signatures)

    @property
    def ledger(self) -> list[LedgerEntry]:
        """Every landed transaction, in landing order (read from the state)."""
        return self._state.ledger()

    # -- test controls -----------------------------------------------------------------

    def hold(self) -> None:
        """Nothing lands until `release()`: freezes transactions in flight."""
        if self._held is None:
            self._held = []

    def halt(self) -> list[str]:
        """The market stops: nothing lands any more (its timers would land transactions and
        commit them after the stop). What was on its way, for `land_soon` on a restart."""
        for timer in self._landing.values():
            timer.cancel()
        halted = list(self._landing)
        self._landing.clear()
        return halted

    def land_soon(self, signatures: list[str]) -> None:
        """Land these (halted on their way) as if they arrived now."""
        for signature in signatures:
            self._arrive(signature)

    def release(self) -> None:
        held, self._held = self._held or [], None
        self._arrivals.extend(held)
        self.flush()

    async def received(self, signature: str, timeout: float) -> None:
        """Until the chain has been sent this signature (tests: the engine stores a
        signature before it sends the transaction)."""
        if self._ever_received(signature):
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
        return self._state.landed_count(signature)

    # -- landing -----------------------------------------------------------------------

    def _ever_received(self, signature: str) -> bool:
        return signature in self._signatures or self._state.lookup(signature) is not None

    def _known(self, signature: str) -> TxStatus:
        status = self._signatures.status(signature)
        if status is not None:
            return status
        settled = self._state.lookup(signature)  # an index lookup: microseconds
        return _UNKNOWN if settled is None else settled.status

    def _draw_drop(self) -> bool:
        if self._forced_drops > 0:
            self._forced_drops -= 1
            return True
        return self._profile.drop_rate > 0 and self._rng.random() < self._profile.drop_rate

    def _batch_future(self) -> asyncio.Future[None]:
        if self._batch_done is None:
            self._batch_done = asyncio.get_running_loop().create_future()
        return self._batch_done

    def _schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _arrive_later(self, signature: str) -> None:
        low, high = self._profile.land_latency_ms
        delay = self._rng.uniform(low, high) / 1000 if high > 0 else 0.0
        loop = asyncio.get_running_loop()
        self._landing[signature] = loop.call_later(delay, self._arrive, signature)

    def _arrive(self, signature: str) -> None:
        self._landing.pop(signature, None)
        if self._held is not None:
            self._held.append(signature)
        else:
            self._arrivals.append(signature)
            self._schedule_flush()

    def _flush(self) -> None:
        """Execute the landings due, commit them with the transactions received and the
        market's changes as one transaction, and only then make them known."""
        self._flush_handle = None
        batch, self._batch = self._batch, ChainBatch()
        done, self._batch_done = self._batch_done, None
        arrivals, self._arrivals = self._arrivals, []
        try:
            for signature in arrivals:
                if signature in self._in_flight and self._signatures.pending(signature):
                    batch.settled.append(self._execute(signature))
            if self.state_source is not None:
                pools, meta = self.state_source()
                batch.pools.extend(pools)
                batch.meta.update(meta)
            batch.meta["clock"] = {"slot": self.current_slot(), "wall": time.time()}
            self._state.commit(batch)
        except Exception as exc:
            # Not only the database's errors: a sender awaits `done`, and an error escaping
            # this callback would leave it waiting forever.
            self._commit_failed(batch, done, exc)
            return
        for tx, dropped in batch.received:
            self._received(tx, dropped)
        if done is not None:
            done.set_result(None)
        if not batch.settled:
            return
        landed = [s.slot for s in batch.settled if s.entry is not None]
        if landed and self.on_landed is not None:
            self.on_landed(max(landed))
        for settled in batch.settled:
            self._settle(settled)
        self._forget_old()

    def _commit_failed(
        self, batch: ChainBatch, done: asyncio.Future[None] | None, exc: Exception
    ) -> None:
        """Nothing becomes known. The transactions received are refused (never recorded,
        they never land); the landings, whose pools moved already, wait unannounced for a
        commit that takes them, with the pools' states."""
        log.error("the chain could not commit to %s: %s; trying again", self._state.path, exc)
        for tx, _ in batch.received:
            self._receiving.pop(tx.signature, None)
        if done is not None:
            done.set_exception(
                TransientVenueError(
                    VENUE_DOWN, f"the chain could not record the transaction: {exc}"
                )
            )
            done.exception()  # whoever awaited it has it; nobody else must be told
        later = self._batch
        self._batch = ChainBatch(
            settled=batch.settled + later.settled,
            pools=batch.pools + later.pools,
            meta={**batch.meta, **later.meta},
            received=later.received,
        )
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(RETRY_COMMIT_S, self._flush)

    def _received(self, tx: Tx, dropped: bool) -> None:
        self._receiving.pop(tx.signature, None)
        self._signatures.received(tx.signature)
        self._in_flight[tx.signature] = _InFlight(tx, dropped)
        received = self._receipts_awaited.pop(tx.signature, None)
        if received is not None:
            received.set()
        self._arrive_later(tx.signature)

    def _execute(self, signature: str) -> Settled:
        """Run the transaction against the pools as they are now; its fate, not yet told."""
        flight = self._in_flight[signature]
        tx = flight.tx
        slot = self.current_slot()
        if flight.dropped or slot > tx.last_valid_slot:
            error = TransientVenueError(
                TX_DROPPED, "the blockhash expired before the transaction landed"
            )
            return Settled(signature, slot, TxStatus(TxState.FAILED, error=error))
        try:
            total, fillable = sum(self._leg_out(leg, commit=False) for leg in tx.legs), True
        except (PoolExhausted, DustAmount):
            # A leg the pools can no longer fill fails the whole transaction, even with a
            # zero minimum: committing it would raise half way through the legs.
            total, fillable = 0, False
        if not fillable or total < tx.min_out:
            token = tx.legs[0].token_out
            error = TransientVenueError(
                SLIPPAGE_EXCEEDED,
                f"would receive {token.format(total)} {token.symbol}, "
                f"below the minimum of {token.format(tx.min_out)}",
            )
            return Settled(signature, slot, TxStatus(TxState.FAILED, error=error))
        # Atomic: the dry run above succeeded against this same state, so every leg does.
        fills = tuple(
            LegFill(leg.venue, leg.amount_in, self._leg_out(leg, commit=True)) for leg in tx.legs
        )
        amount_in = sum(fill.amount_in for fill in fills)
        receipt = Receipt(signature, slot, amount_in, total, fills)
        entry = LedgerEntry(
            signature,
            slot,
            tx.legs[0].token_in.symbol,
            tx.legs[0].token_out.symbol,
            amount_in,
            total,
            fills,
        )
        return Settled(signature, slot, TxStatus(TxState.LANDED, receipt=receipt), entry)

    def _leg_out(self, leg: Quote, *, commit: bool) -> int:
        return self._venues[leg.venue].execute(leg.hops, leg.amount_in, commit=commit)

    def _settle(self, settled: Settled) -> None:
        self._in_flight.pop(settled.signature, None)
        self._signatures.settled(settled.signature, settled.slot, settled.status)
        waiter = self._waiters.pop(settled.signature, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _forget_old(self) -> None:
        """Statuses settled before the window, or beyond the most kept, are read from the
        file from now on."""
        self._signatures.forget(self.current_slot() - self.keep_slots, self.max_remembered)

"""What the engine needs from a market: venues that quote, and a chain that executes.

A venue (a DEX program: Raydium, Meteora) prices swaps. The chain (an RPC endpoint) takes a
signed transaction, lands it or not, and answers for its fate by signature. They are two
protocols because a real deployment gets them from two places (a DEX SDK and an RPC node), and
because one transaction may hold legs on several venues (a split route lands atomically, as
Jupiter's do). The simulated market implements both in-process; a remote adapter speaks to
the shared simulated chain service; a real adapter would speak to Solana.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import msgspec

from order_engine.venues.tokens import Token

if TYPE_CHECKING:  # controls imports wire, which imports this module
    from order_engine.venues.controls import MarketControls


class VenueError(Exception):
    """A failure the engine must react to. `transient` says whether a retry can help."""

    transient: bool = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransientVenueError(VenueError):
    """Retrying (with fresh quotes) may succeed: timeouts, drops, slippage at landing."""

    transient = True


class PermanentVenueError(VenueError):
    """Retrying cannot help: no route between the tokens, not enough liquidity."""

    transient = False


# Error codes, shared by every implementation so the engine and clients can rely on them.
VENUE_DOWN = "venue_down"  # transient
VENUE_TIMEOUT = "venue_timeout"  # transient
NO_QUOTES = "no_quotes"  # transient: every venue failed to quote
SLIPPAGE_EXCEEDED = "slippage_exceeded"  # transient: landed output < min_out
TX_DROPPED = "tx_dropped"  # transient: blockhash expired before the tx landed
TX_UNKNOWN = "tx_unknown"  # transient: the chain never saw the tx and it can no longer land
NO_ROUTE = "no_route"  # permanent: no pool path between the tokens
INSUFFICIENT_LIQUIDITY = "insufficient_liquidity"  # permanent: the pools cannot fill it
PRICE_IMPACT_TOO_HIGH = "price_impact_too_high"  # permanent: the order is too big for the pools
AMOUNT_TOO_SMALL = "amount_too_small"  # permanent: the output would round to nothing


# Hops and quotes are made by the dozen per order (every size a route probes on every venue):
# msgspec's structs are built in C, several times faster than frozen dataclasses.
class Hop(msgspec.Struct, frozen=True):
    """One pool traversed by a quote (a multi-hop route has two)."""

    pool_id: str
    token_in: str  # symbol of the pool-side token (wSOL, never SOL)
    token_out: str
    amount_in: int
    amount_out: int
    fee: int  # in token_in base units


class Quote(msgspec.Struct, frozen=True):
    venue: str  # "Raydium" | "Meteora"
    token_in: Token  # as the user named it (SOL stays SOL; the venue trades wSOL)
    token_out: Token
    amount_in: int  # base units of token_in
    amount_out: int  # base units of token_out
    fee_bps: float  # total fee over the route, in bps of the input
    price: float  # execution price: UI units of token_out per UI unit of token_in
    price_impact_bps: float  # execution price against the pre-trade marginal price, fees excluded
    hops: tuple[Hop, ...]
    # Where the price came from: the pools as streamed to this process ("stream", at that
    # slot), or the venue's own quote call ("rpc"; its slot, when the venue says).
    source: str = "rpc"
    slot: int | None = None


@dataclass(frozen=True, slots=True)
class Tx:
    """A signed transaction. The signature is known before submission, as on Solana, so the
    engine records it first and can always ask the chain about it after a crash."""

    signature: str  # base58 of 64 bytes
    legs: tuple[Quote, ...]  # one per venue; a split route has two
    min_out: int  # the whole transaction reverts if the legs' total is below it
    wrap_sol: bool  # SOL in: the transaction wraps it into wSOL first
    unwrap_sol: bool  # SOL out: the transaction unwraps wSOL at the end
    last_valid_slot: int  # blockhash expiry: after it, the tx can never land


class TxState(StrEnum):
    PENDING = "pending"
    LANDED = "landed"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the chain never saw it (or it expired unseen): safe to rebuild


@dataclass(frozen=True, slots=True)
class LegFill:
    venue: str
    amount_in: int
    amount_out: int


@dataclass(frozen=True, slots=True)
class Receipt:
    signature: str
    slot: int
    amount_in: int
    amount_out: int
    legs: tuple[LegFill, ...]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A transaction that landed, as the chain's ledger records it."""

    signature: str
    slot: int
    token_in: str
    token_out: str
    amount_in: int
    amount_out: int
    legs: tuple[LegFill, ...]


@dataclass(frozen=True, slots=True)
class TxStatus:
    state: TxState
    receipt: Receipt | None = None
    error: VenueError | None = None  # set when state is FAILED


class Venue(Protocol):
    name: str

    async def quote(self, token_in: Token, token_out: Token, amount_in: int) -> Quote:
        """Best route on this venue (direct, or two hops via SOL/USDC).

        Raises PermanentVenueError(NO_ROUTE | INSUFFICIENT_LIQUIDITY) or
        TransientVenueError(VENUE_DOWN | VENUE_TIMEOUT)."""
        ...

    async def quote_curve(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None]:
        """Quotes for several input sizes against one pool snapshot, in one round trip:
        what a split-route search needs. None for a size the pools cannot fill (too small
        or too large); otherwise the same errors as `quote`."""
        ...


@runtime_checkable
class LocalCurve(Protocol):
    """A venue that can often quote from pools held in this process: no round trip, no
    task, no timeout. The router asks it first."""

    def curve_now(
        self, token_in: Token, token_out: Token, amounts_in: Sequence[int]
    ) -> list[Quote | None] | None:
        """`quote_curve`'s answer computed at once, or None when it cannot be (the caller
        then awaits `quote_curve`)."""
        ...


class Chain(Protocol):
    async def build(self, legs: Sequence[Quote], min_out: int) -> Tx:
        """Assemble and sign one transaction holding every leg (a recent blockhash)."""
        ...

    async def submit(self, tx: Tx) -> str:
        """Send it; returns the signature. Landing happens later (or never)."""
        ...

    async def status(self, signature: str) -> TxStatus:
        """The fate of a signature: pending, landed with a receipt, failed, or unknown."""
        ...

    async def can_still_land(self, signature: str, last_valid_slot: int) -> bool:
        """Whether a transaction the chain has not seen may yet arrive and land: its
        blockhash is still valid and it may be on its way. Until this is False, an unseen
        transaction must not be rebuilt (both could land)."""
        ...

    async def wait(self, signature: str, timeout: float) -> TxStatus:
        """Wait until the signature is no longer pending (as a signatureSubscribe would),
        or `timeout` seconds; returns the status then."""
        ...


class Market(Protocol):
    """Where the venues and the chain come from: in-process, or a shared service."""

    @property
    def venues(self) -> Mapping[str, Venue]: ...

    @property
    def chain(self) -> Chain: ...

    @property
    def controls(self) -> MarketControls:
        """Move a price, launch a token: the simulated market's, for demos and tests."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

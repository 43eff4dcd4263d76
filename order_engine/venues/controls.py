"""Controls of the simulated market, for demos and tests: move a price, launch a token, list
the tokens. The market in this process (`LocalControls` over `SimulatedMarket`) and the
chain service (`RemoteMarket`, over its `/admin` endpoints) offer the same async calls, so a
caller holding a `Market` uses `market.controls` whichever it is.

A move or a launch says where the feed published it (`stream_id`, `seq`): a follower of that
stream (`MarketData.reached(seq)`) has then seen every pool it changed.

Refusals are `ControlError`s naming the field at fault, in the JSON names of the HTTP
controls, so every layer (the market, the chain service, the engine's API) says the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from order_engine.venues.tokens import Listing, Token, TokenState
from order_engine.venues.wire import Fields, WireError, amount_json

if TYPE_CHECKING:
    from order_engine.venues.market import SimulatedMarket


class ControlError(ValueError):
    """A control the market refuses: `field` is the input at fault, `status` the HTTP
    status that says so (400 bad input, 409 the market's state forbids it)."""

    def __init__(self, field: str, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class PriceMove:
    token_a: str  # as pools name them (wSOL, not SOL)
    token_b: str
    bps: float
    price_before: float  # the fair price of a in b, UI units
    price_after: float
    pools: tuple[str, ...]  # every pool whose new state the feed published
    stream_id: str
    seq: int  # the feed's seq once it had published them all


@dataclass(frozen=True, slots=True)
class Launch:
    token: Token
    venue: str
    pool_id: str
    quote_token: str  # what the pool pairs the token with: WSOL
    price_usd: Decimal  # the bonding curve's last price: where the pool opens
    liquidity_usd: int  # the pool's value, both sides
    quote_depth: int  # base units of the quote token the pool holds
    stream_id: str
    seq: int  # the feed message that published the new pool


class MarketControls(Protocol):
    async def move_price(self, token_a: str, token_b: str, bps: float) -> PriceMove:
        """Move the fair price of a in b by `bps` (positive: a worth more); every pool
        holding a follows at once. Raises ControlError."""
        ...

    async def launch(
        self, token: str, venue: str | None = None, liquidity_usd: float | None = None
    ) -> Launch:
        """Create an upcoming token's first pool (against wSOL). Raises ControlError."""
        ...

    async def tokens(self) -> tuple[Listing, ...]:
        """Every token the market lists, tradable and upcoming."""
        ...


class LocalControls:
    """The controls of the market in this process."""

    def __init__(self, market: SimulatedMarket) -> None:
        self._market = market

    async def move_price(self, token_a: str, token_b: str, bps: float) -> PriceMove:
        return self._market.move_price(token_a, token_b, bps)

    async def launch(
        self, token: str, venue: str | None = None, liquidity_usd: float | None = None
    ) -> Launch:
        return self._market.launch(token, venue, liquidity_usd)

    async def tokens(self) -> tuple[Listing, ...]:
        return self._market.registry.listing()


# -- JSON, as the chain service and the engine's API answer --------------------------------


def listing_to_json(listing: Listing) -> dict[str, Any]:
    token = listing.token
    return {
        "symbol": token.symbol,
        "mint": token.mint,
        "decimals": token.decimals,
        "state": listing.state.value,
    }


def listing_from_fields(f: Fields) -> Listing:
    token = Token(f.text("symbol"), f.text("mint"), f.integer("decimals"))
    try:
        state = TokenState(f.text("state"))
    except ValueError:
        raise WireError(f"{f.where('state')}: not a token state") from None
    return Listing(token, state)


def move_to_json(move: PriceMove) -> dict[str, Any]:
    return {
        "tokenA": move.token_a,
        "tokenB": move.token_b,
        "bps": move.bps,
        "priceBefore": move.price_before,
        "priceAfter": move.price_after,
        "pools": list(move.pools),
        "streamId": move.stream_id,
        "seq": move.seq,
    }


def move_from_fields(f: Fields) -> PriceMove:
    pools = tuple(
        _text(item, f"{f.where('pools')}[{i}]") for i, item in enumerate(f.items("pools"))
    )
    return PriceMove(
        f.text("tokenA"),
        f.text("tokenB"),
        f.number("bps"),
        f.number("priceBefore"),
        f.number("priceAfter"),
        pools,
        f.text("streamId"),
        f.integer("seq"),
    )


def launch_to_json(launch: Launch) -> dict[str, Any]:
    return {
        "token": listing_to_json(Listing(launch.token, TokenState.TRADABLE)),
        "venue": launch.venue,
        "poolId": launch.pool_id,
        "quoteToken": launch.quote_token,
        "priceUsd": str(launch.price_usd),
        "liquidityUsd": launch.liquidity_usd,
        "quoteDepth": amount_json(launch.quote_depth),
        "streamId": launch.stream_id,
        "seq": launch.seq,
    }


def launch_from_fields(f: Fields) -> Launch:
    price_usd = f.parsed("priceUsd", Decimal, ArithmeticError, "not a decimal")
    return Launch(
        listing_from_fields(f.nested("token")).token,
        f.text("venue"),
        f.text("poolId"),
        f.text("quoteToken"),
        price_usd,
        f.integer("liquidityUsd"),
        f.amount("quoteDepth"),
        f.text("streamId"),
        f.integer("seq"),
    )


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{where}: expected a string")
    return value

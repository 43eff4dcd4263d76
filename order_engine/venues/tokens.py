"""The token registry: symbols, mint addresses, decimals, and exact unit conversion.

Inside the engine every amount is an integer in the token's base units; decimal UI amounts
exist only at the edges (API input, event messages), converted here with `Decimal` so no
float ever touches money.

The registry also lists upcoming tokens: announced (symbol, mint, decimals) but not yet
tradable, since no pool holds them. A launch (the token's first pool) makes one tradable.
Until then `resolve` does not find it unless asked for upcoming tokens too, so an order
for it is refused like an unknown token's, while a sniper order may name it and wait.
A registry describes one chain: which upcoming tokens are tradable follows the pools
that chain holds (`sync_pools` from a snapshot of them, `observe_pool` as new ones appear).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

import base58


class UnknownToken(LookupError):
    """Neither a known symbol nor a known mint address."""


class AmountError(ValueError):
    """A UI amount that cannot be represented in the token's base units."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Token:
    symbol: str
    mint: str
    decimals: int
    # SOL itself is not an SPL token: pools hold wSOL, so a swap touching SOL wraps/unwraps.
    native: bool = False

    @property
    def scale(self) -> int:
        return int(10**self.decimals)

    def to_base(self, ui_amount: Decimal) -> int:
        """Exact conversion; refuses more fractional digits than the token has."""
        if not ui_amount.is_finite():
            raise AmountError("invalid_amount", "amount must be a finite number")
        if ui_amount <= 0:
            raise AmountError("invalid_amount", "amount must be greater than 0")
        exponent = ui_amount.normalize().as_tuple().exponent
        assert isinstance(exponent, int)  # finite, checked above
        if -exponent > self.decimals:
            raise AmountError(
                "too_many_decimals",
                f"{self.symbol} has {self.decimals} decimals; amount has more",
            )
        try:
            return int(ui_amount.scaleb(self.decimals))
        except (InvalidOperation, OverflowError) as exc:  # pragma: no cover - guarded above
            raise AmountError("invalid_amount", "amount is out of range") from exc

    def to_ui(self, base_amount: int) -> Decimal:
        return Decimal(base_amount).scaleb(-self.decimals)

    def format(self, base_amount: int) -> str:
        """Decimal string in token units, exact, without exponent notation."""
        text = format(self.to_ui(base_amount), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text


# Mainnet mint addresses, so a client that already speaks in mints can use them directly.
SOL = Token("SOL", "So11111111111111111111111111111111111111111", 9, native=True)
WSOL = Token("WSOL", "So11111111111111111111111111111111111111112", 9)
USDC = Token("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 6)
USDT = Token("USDT", "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB", 6)
BONK = Token("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5)
JUP = Token("JUP", "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN", 6)
RAY = Token("RAY", "4k3Dyjzvzp8eMZWUXbBCjEvwSkkk59S5iCNLY3QrkX6R", 6)

ALL_TOKENS: tuple[Token, ...] = (SOL, WSOL, USDC, USDT, BONK, JUP, RAY)


def simulated_mint(symbol: str) -> str:
    """A mint address for a token only the simulated market has: base58 of 32 bytes (a
    valid address), derived from the symbol so every process computes the same one."""
    digest = hashlib.sha256(f"order_engine simulated mint {symbol}".encode()).digest()
    mint: str = base58.b58encode(digest).decode()
    return mint


# Tokens still on their bonding curve (pump.fun style, 6 decimals): listed, not tradable
# until the simulated market launches them (`SimulatedMarket.launch`).
UPCOMING_TOKENS: tuple[Token, ...] = tuple(
    Token(symbol, simulated_mint(symbol), 6)
    for symbol in ("WOOF", "ZAPP", "GLORB", "MEOWL", "SNEK")
)


class TokenState(StrEnum):
    TRADABLE = "tradable"
    UPCOMING = "upcoming"  # listed, but no pool holds it yet


@dataclass(frozen=True, slots=True)
class Listing:
    token: Token
    state: TokenState


class TokenRegistry:
    def __init__(
        self, tokens: tuple[Token, ...] = ALL_TOKENS, *, upcoming: tuple[Token, ...] = ()
    ) -> None:
        every = (*tokens, *upcoming)
        self._by_symbol = {t.symbol.upper(): t for t in every}
        self._by_mint = {t.mint: t for t in every}
        if len(self._by_symbol) != len(every) or len(self._by_mint) != len(every):
            raise ValueError("every token needs a symbol and a mint of its own")
        self._upcoming = frozenset(t.symbol for t in upcoming)
        self._launched: set[str] = set()  # upcoming tokens some pool now holds

    def resolve(self, symbol_or_mint: str, *, upcoming: bool = False) -> Token:
        """Symbols are case-insensitive; mint addresses are case-sensitive (base58).
        Tradable tokens only, unless `upcoming` (a sniper's target, a stored order's)."""
        token = self._by_symbol.get(symbol_or_mint.upper()) or self._by_mint.get(symbol_or_mint)
        if token is None or not (upcoming or self._tradable(token)):
            raise UnknownToken(symbol_or_mint)
        return token

    def __iter__(self) -> Iterator[Token]:
        """The tradable tokens."""
        return (t for t in self._by_symbol.values() if self._tradable(t))

    def state(self, token: Token) -> TokenState:
        if self._by_symbol.get(token.symbol.upper()) != token:
            raise UnknownToken(token.symbol)
        return TokenState.TRADABLE if self._tradable(token) else TokenState.UPCOMING

    def listing(self) -> tuple[Listing, ...]:
        """Every token, tradable and upcoming, with its state, in the order listed."""
        return tuple(Listing(t, self.state(t)) for t in self._by_symbol.values())

    def upcoming(self) -> tuple[Token, ...]:
        """The tokens not launched yet, in the order listed."""
        return tuple(t for t in self._by_symbol.values() if not self._tradable(t))

    def mark_launched(self, symbol_or_mint: str) -> bool:
        """A pool now holds this token: it is tradable. True if it was upcoming."""
        token = self.resolve(symbol_or_mint, upcoming=True)
        if self._tradable(token):
            return False
        self._launched.add(token.symbol)
        return True

    def observe_pool(self, *pool_tokens: str) -> tuple[Token, ...]:
        """A pool holding these tokens (symbols, as pool states name them) exists: the
        upcoming ones among them become tradable. Those that did, in order."""
        made = []
        for symbol in pool_tokens:
            if symbol in self._upcoming and symbol not in self._launched:
                self._launched.add(symbol)
                made.append(self._by_symbol[symbol.upper()])
        return tuple(made)

    def sync_pools(self, pool_tokens: Iterable[str]) -> None:
        """The chain's pools hold exactly these tokens (a snapshot, a new market): an
        upcoming token is tradable if and only if one of them is it. A restarted chain
        has launched nothing yet, whatever the last one had."""
        self._launched = set(self._upcoming.intersection(pool_tokens))

    def _tradable(self, token: Token) -> bool:
        return token.symbol not in self._upcoming or token.symbol in self._launched

    @staticmethod
    def pool_token(token: Token) -> Token:
        """The token pools actually hold: native SOL trades as wSOL."""
        return WSOL if token.native else token


REGISTRY = TokenRegistry(ALL_TOKENS, upcoming=UPCOMING_TOKENS)

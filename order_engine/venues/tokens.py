"""The token registry: symbols, mint addresses, decimals, and exact unit conversion.

Inside the engine every amount is an integer in the token's base units; decimal UI amounts
exist only at the edges (API input, event messages), converted here with `Decimal` so no
float ever touches money.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


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


class TokenRegistry:
    def __init__(self, tokens: tuple[Token, ...] = ALL_TOKENS) -> None:
        self._by_symbol = {t.symbol.upper(): t for t in tokens}
        self._by_mint = {t.mint: t for t in tokens}

    def resolve(self, symbol_or_mint: str) -> Token:
        """Symbols are case-insensitive; mint addresses are case-sensitive (base58)."""
        token = self._by_symbol.get(symbol_or_mint.upper()) or self._by_mint.get(symbol_or_mint)
        if token is None:
            raise UnknownToken(symbol_or_mint)
        return token

    def __iter__(self) -> Iterator[Token]:
        return iter(self._by_symbol.values())

    @staticmethod
    def pool_token(token: Token) -> Token:
        """The token pools actually hold: native SOL trades as wSOL."""
        return WSOL if token.native else token


REGISTRY = TokenRegistry()

"""The JSON form of quotes, transactions and their fates, shared by the chain service and
its remote adapter.

Amounts travel as decimal strings of base units: a JSON number is a float to most clients,
and a float cannot hold every u64. Tokens travel by symbol and are resolved against the
registry on the way in, so both sides agree on mints and decimals without sending them.
Floats (fees, prices) travel as JSON numbers, whose shortest repr round-trips exactly;
non-finite ones, which JSON cannot spell, as the strings "NaN", "Infinity", "-Infinity".
Decoding never trusts its input: anything unexpected raises `WireError` naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from order_engine.venues.base import (
    Hop,
    LedgerEntry,
    LegFill,
    PermanentVenueError,
    Quote,
    Receipt,
    TransientVenueError,
    Tx,
    TxState,
    TxStatus,
    VenueError,
)
from order_engine.venues.tokens import REGISTRY, Token, TokenRegistry, UnknownToken

JsonObject = dict[str, Any]
T = TypeVar("T")

# Refusals of the service itself (the venue and chain codes are in `base`).
BAD_REQUEST = "bad_request"  # permanent: the request was malformed
UNKNOWN_VENUE = "unknown_venue"  # permanent: no venue by that name
NOT_FOUND = "not_found"  # permanent: no such endpoint

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class WireError(ValueError):
    """JSON that does not describe the expected value; the message names the field."""


class Fields:
    """Typed, path-aware reads from one decoded JSON object."""

    def __init__(self, value: object, path: str = "", registry: TokenRegistry = REGISTRY) -> None:
        if not isinstance(value, Mapping):
            raise WireError(f"{path or 'body'}: expected a JSON object")
        self._obj: Mapping[str, object] = value
        self._path = path
        self._registry = registry

    def where(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def has(self, key: str) -> bool:
        return self._obj.get(key) is not None

    def raw(self, key: str) -> object:
        if key not in self._obj:
            raise WireError(f"{self.where(key)}: missing")
        return self._obj[key]

    def text(self, key: str) -> str:
        value = self.raw(key)
        if not isinstance(value, str) or not value:
            raise WireError(f"{self.where(key)}: expected a non-empty string")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if not isinstance(value, bool):
            raise WireError(f"{self.where(key)}: expected true or false")
        return value

    def amount(self, key: str) -> int:
        return parse_amount(self.raw(key), self.where(key))

    def integer(self, key: str) -> int:
        value = self.raw(key)
        # bool is an int to Python, never to a JSON writer.
        if not isinstance(value, int) or isinstance(value, bool):
            raise WireError(f"{self.where(key)}: expected an integer")
        return value

    def number(self, key: str) -> float:
        value = self.raw(key)
        if isinstance(value, str) and value in _NON_FINITE:
            return _NON_FINITE[value]
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                pass
        raise WireError(f"{self.where(key)}: expected a number")

    def token(self, key: str) -> Token:
        return self.parsed(key, self._registry.resolve, UnknownToken, "unknown token {}")

    def parsed(
        self, key: str, parse: Callable[[str], T], refused: type[Exception], problem: str
    ) -> T:
        """The text at `key`, read by `parse`. What `parse` raises for text it cannot read
        (`refused`) becomes a WireError saying `problem`, `{}` in it standing for the text."""
        text = self.text(key)
        try:
            return parse(text)
        except refused:
            raise WireError(f"{self.where(key)}: {problem.format(repr(text))}") from None

    def items(self, key: str) -> list[object]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise WireError(f"{self.where(key)}: expected an array")
        return value

    def each(self, key: str, decode: Callable[[Fields], T]) -> tuple[T, ...]:
        """Decode every element of an array of objects."""
        return tuple(
            decode(Fields(item, f"{self.where(key)}[{i}]", self._registry))
            for i, item in enumerate(self.items(key))
        )

    def nested(self, key: str) -> Fields:
        return Fields(self.raw(key), self.where(key), self._registry)


def parse_amount(value: object, where: str) -> int:
    """A decimal string of an integer; a JSON integer is accepted too (hand-written input)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        try:
            return int(value)
        except ValueError:  # beyond Python's digit limit for str -> int
            pass
    raise WireError(f"{where}: expected an integer amount as a decimal string")


def amount_json(value: int) -> str:
    return str(value)


def number_json(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


# -- quotes --------------------------------------------------------------------------------


def hop_to_json(hop: Hop) -> JsonObject:
    return {
        "poolId": hop.pool_id,
        "tokenIn": hop.token_in,
        "tokenOut": hop.token_out,
        "amountIn": amount_json(hop.amount_in),
        "amountOut": amount_json(hop.amount_out),
        "fee": amount_json(hop.fee),
    }


def hop_from_fields(f: Fields) -> Hop:
    return Hop(
        pool_id=f.text("poolId"),
        token_in=f.text("tokenIn"),
        token_out=f.text("tokenOut"),
        amount_in=f.amount("amountIn"),
        amount_out=f.amount("amountOut"),
        fee=f.amount("fee"),
    )


def quote_to_json(quote: Quote) -> JsonObject:
    return {
        "venue": quote.venue,
        "tokenIn": quote.token_in.symbol,
        "tokenOut": quote.token_out.symbol,
        "amountIn": amount_json(quote.amount_in),
        "amountOut": amount_json(quote.amount_out),
        "feeBps": number_json(quote.fee_bps),
        "price": number_json(quote.price),
        "priceImpactBps": number_json(quote.price_impact_bps),
        "hops": [hop_to_json(hop) for hop in quote.hops],
    }


def quote_from_fields(f: Fields) -> Quote:
    return Quote(
        venue=f.text("venue"),
        token_in=f.token("tokenIn"),
        token_out=f.token("tokenOut"),
        amount_in=f.amount("amountIn"),
        amount_out=f.amount("amountOut"),
        fee_bps=f.number("feeBps"),
        price=f.number("price"),
        price_impact_bps=f.number("priceImpactBps"),
        hops=f.each("hops", hop_from_fields),
    )


def quote_from_json(value: object) -> Quote:
    return quote_from_fields(Fields(value))


# -- transactions --------------------------------------------------------------------------


def tx_to_json(tx: Tx) -> JsonObject:
    return {
        "signature": tx.signature,
        "legs": [quote_to_json(leg) for leg in tx.legs],
        "minOut": amount_json(tx.min_out),
        "wrapSol": tx.wrap_sol,
        "unwrapSol": tx.unwrap_sol,
        "lastValidSlot": tx.last_valid_slot,
    }


def tx_from_fields(f: Fields) -> Tx:
    return Tx(
        signature=f.text("signature"),
        legs=f.each("legs", quote_from_fields),
        min_out=f.amount("minOut"),
        wrap_sol=f.flag("wrapSol"),
        unwrap_sol=f.flag("unwrapSol"),
        last_valid_slot=f.integer("lastValidSlot"),
    )


def tx_from_json(value: object) -> Tx:
    return tx_from_fields(Fields(value))


# -- errors and statuses -------------------------------------------------------------------


def error_to_json(error: VenueError) -> JsonObject:
    return {"code": error.code, "message": error.message, "transient": error.transient}


def error_from_fields(f: Fields) -> VenueError:
    """The subclass follows `transient`: the engine decides on it, not on the class name."""
    cls = TransientVenueError if f.flag("transient") else PermanentVenueError
    message = f.raw("message")
    if not isinstance(message, str):
        raise WireError(f"{f.where('message')}: expected a string")
    return cls(f.text("code"), message)


def error_from_json(value: object) -> VenueError:
    return error_from_fields(Fields(value))


def leg_fill_to_json(leg: LegFill) -> JsonObject:
    return {
        "venue": leg.venue,
        "amountIn": amount_json(leg.amount_in),
        "amountOut": amount_json(leg.amount_out),
    }


def leg_fill_from_fields(f: Fields) -> LegFill:
    return LegFill(f.text("venue"), f.amount("amountIn"), f.amount("amountOut"))


def receipt_to_json(receipt: Receipt) -> JsonObject:
    return {
        "signature": receipt.signature,
        "slot": receipt.slot,
        "amountIn": amount_json(receipt.amount_in),
        "amountOut": amount_json(receipt.amount_out),
        "legs": [leg_fill_to_json(leg) for leg in receipt.legs],
    }


def receipt_from_fields(f: Fields) -> Receipt:
    return Receipt(
        signature=f.text("signature"),
        slot=f.integer("slot"),
        amount_in=f.amount("amountIn"),
        amount_out=f.amount("amountOut"),
        legs=f.each("legs", leg_fill_from_fields),
    )


def status_to_json(status: TxStatus) -> JsonObject:
    return {
        "state": status.state.value,
        "receipt": None if status.receipt is None else receipt_to_json(status.receipt),
        "error": None if status.error is None else error_to_json(status.error),
    }


def status_from_fields(f: Fields) -> TxStatus:
    return TxStatus(
        state=f.parsed("state", TxState, ValueError, "unknown state {}"),
        receipt=receipt_from_fields(f.nested("receipt")) if f.has("receipt") else None,
        error=error_from_fields(f.nested("error")) if f.has("error") else None,
    )


def status_from_json(value: object) -> TxStatus:
    return status_from_fields(Fields(value))


# -- the ledger ----------------------------------------------------------------------------


def ledger_entry_to_json(entry: LedgerEntry) -> JsonObject:
    return {
        "signature": entry.signature,
        "slot": entry.slot,
        "tokenIn": entry.token_in,
        "tokenOut": entry.token_out,
        "amountIn": amount_json(entry.amount_in),
        "amountOut": amount_json(entry.amount_out),
        "legs": [leg_fill_to_json(leg) for leg in entry.legs],
    }


def ledger_entry_from_json(value: object) -> LedgerEntry:
    f = Fields(value)
    return LedgerEntry(
        signature=f.text("signature"),
        slot=f.integer("slot"),
        token_in=f.text("tokenIn"),
        token_out=f.text("tokenOut"),
        amount_in=f.amount("amountIn"),
        amount_out=f.amount("amountOut"),
        legs=f.each("legs", leg_fill_from_fields),
    )

"""The wire format is exact: what one process encodes, another decodes to an equal value."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from order_engine.venues.base import (
    SLIPPAGE_EXCEEDED,
    Hop,
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
from order_engine.venues.chain import LedgerEntry
from order_engine.venues.tokens import ALL_TOKENS
from order_engine.venues.wire import (
    WireError,
    error_from_json,
    error_to_json,
    ledger_entry_from_json,
    ledger_entry_to_json,
    quote_from_json,
    quote_to_json,
    status_from_json,
    status_to_json,
    tx_from_json,
    tx_to_json,
)

# orjson refuses lone surrogates, and no venue or chain ever writes one.
texts = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)
amounts = st.integers(min_value=-(2**200), max_value=2**200) | st.sampled_from([0, 2**64 - 1])
slots = st.integers(min_value=0, max_value=2**63 - 1)
floats = st.floats(allow_nan=False)

hops = st.builds(Hop, texts, texts, texts, amounts, amounts, amounts)
quotes = st.builds(
    Quote,
    venue=texts,
    token_in=st.sampled_from(ALL_TOKENS),
    token_out=st.sampled_from(ALL_TOKENS),
    amount_in=amounts,
    amount_out=amounts,
    fee_bps=floats,
    price=floats,
    price_impact_bps=floats,
    hops=st.lists(hops, max_size=3).map(tuple),
)
txs = st.builds(
    Tx,
    signature=texts,
    legs=st.lists(quotes, min_size=1, max_size=3).map(tuple),
    min_out=amounts,
    wrap_sol=st.booleans(),
    unwrap_sol=st.booleans(),
    last_valid_slot=slots,
)
leg_fills = st.builds(LegFill, texts, amounts, amounts)
receipts = st.builds(Receipt, texts, slots, amounts, amounts, st.lists(leg_fills).map(tuple))
errors = st.builds(
    lambda transient, code, message: (TransientVenueError if transient else PermanentVenueError)(
        code, message
    ),
    st.booleans(),
    texts,
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
)
statuses = st.builds(TxStatus, st.sampled_from(TxState), st.none() | receipts, st.none() | errors)
ledger_entries = st.builds(
    LedgerEntry, texts, slots, texts, texts, amounts, amounts, st.lists(leg_fills).map(tuple)
)


def over_the_wire(value: Any) -> Any:
    """What the other process reads: bytes, not the dict we built."""
    return orjson.loads(orjson.dumps(value))


def error_key(error: VenueError | None) -> tuple[type, str, str, bool] | None:
    # Exceptions compare by identity; what must survive is their class, code and message.
    return None if error is None else (type(error), error.code, error.message, error.transient)


@given(quotes)
def test_quote_round_trip_is_exact(quote: Quote) -> None:
    assert quote_from_json(over_the_wire(quote_to_json(quote))) == quote


@given(txs)
def test_tx_round_trip_is_exact(tx: Tx) -> None:
    assert tx_from_json(over_the_wire(tx_to_json(tx))) == tx


@given(statuses)
def test_status_round_trip_is_exact(status: TxStatus) -> None:
    decoded = status_from_json(over_the_wire(status_to_json(status)))
    assert (decoded.state, decoded.receipt) == (status.state, status.receipt)
    assert error_key(decoded.error) == error_key(status.error)


@given(ledger_entries)
def test_ledger_entry_round_trip_is_exact(entry: LedgerEntry) -> None:
    assert ledger_entry_from_json(over_the_wire(ledger_entry_to_json(entry))) == entry


def test_amounts_are_decimal_strings_so_no_client_rounds_them() -> None:
    big = 2**64 - 1
    encoded = tx_to_json(
        Tx("sig", (quote_with(amount_in=big, amount_out=big),), big, True, False, 150)
    )
    assert encoded["minOut"] == "18446744073709551615"
    assert encoded["legs"][0]["amountIn"] == "18446744073709551615"
    assert encoded["lastValidSlot"] == 150


def test_non_finite_floats_survive_as_strings() -> None:
    quote = quote_with(fee_bps=math.inf, price=-math.inf, price_impact_bps=math.nan)
    wire = over_the_wire(quote_to_json(quote))
    assert (wire["feeBps"], wire["price"], wire["priceImpactBps"]) == (
        "Infinity",
        "-Infinity",
        "NaN",
    )
    decoded = quote_from_json(wire)
    assert (decoded.fee_bps, decoded.price) == (math.inf, -math.inf)
    assert math.isnan(decoded.price_impact_bps)


def test_an_error_keeps_its_transience() -> None:
    error = error_from_json(error_to_json(TransientVenueError(SLIPPAGE_EXCEEDED, "below min")))
    assert isinstance(error, TransientVenueError)
    assert (error.code, error.message, error.transient) == (SLIPPAGE_EXCEEDED, "below min", True)
    # The base class is not transient, so it comes back as the permanent kind.
    plain = error_from_json(error_to_json(VenueError("x", "y")))
    assert isinstance(plain, PermanentVenueError)


def quote_with(**changes: Any) -> Quote:
    base: dict[str, Any] = {
        "venue": "Raydium",
        "token_in": ALL_TOKENS[0],
        "token_out": ALL_TOKENS[2],
        "amount_in": 1_000_000_000,
        "amount_out": 150_000_000,
        "fee_bps": 25.0,
        "price": 150.0,
        "price_impact_bps": 0.25,
        "hops": (Hop("raydium:WSOL-USDC", "WSOL", "USDC", 1_000_000_000, 150_000_000, 2_500_000),),
    }
    return Quote(**{**base, **changes})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenIn": "DOGE"}, "tokenIn: unknown token 'DOGE'"),
        ({"amountIn": "1.5"}, "amountIn: expected an integer amount"),
        ({"amountIn": "01"}, "amountIn: expected an integer amount"),
        ({"amountIn": " 1"}, "amountIn: expected an integer amount"),
        ({"amountIn": True}, "amountIn: expected an integer amount"),
        ({"amountIn": 1.0}, "amountIn: expected an integer amount"),
        ({"amountIn": "9" * 5000}, "amountIn: expected an integer amount"),
        ({"price": "cheap"}, "price: expected a number"),
        ({"price": 10**400}, "price: expected a number"),
        ({"hops": {}}, "hops: expected an array"),
        ({"hops": [{"poolId": "p"}]}, "hops[0].tokenIn: missing"),
        ({"venue": ""}, "venue: expected a non-empty string"),
    ],
)
def test_a_malformed_quote_names_the_field(change: dict[str, Any], message: str) -> None:
    wire = {**quote_to_json(quote_with()), **change}
    with pytest.raises(WireError, match=message.replace("[", r"\[").replace("]", r"\]")):
        quote_from_json(wire)


def test_a_malformed_status_names_the_field() -> None:
    with pytest.raises(WireError, match="state: unknown state 'gone'"):
        status_from_json({"state": "gone"})
    with pytest.raises(WireError, match=r"error\.transient: expected true or false"):
        status_from_json(
            {"state": "failed", "error": {"code": "x", "message": "y", "transient": 1}}
        )
    with pytest.raises(WireError, match="body: expected a JSON object"):
        status_from_json([])

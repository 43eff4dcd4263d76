"""The one description of the orders row: it follows the domain's dataclasses, and both
dialects turn every field into a row and back unchanged."""

from __future__ import annotations

from dataclasses import fields

import pytest

from order_engine.orders import Order, OrderType, OrderUpdate, Status
from order_engine.store import postgres, sqlite
from order_engine.store.rows import (
    KINDS,
    ORDER_COLUMNS,
    READ_COLUMNS,
    UPDATE_COLUMNS,
    Kind,
    OrderRows,
)

EVERY_FIELD_SET = Order(
    order_id="00000000-0000-4000-8000-000000000001",
    token_in="SOL",
    token_out="USDC",
    amount=2**64 - 1,
    slippage_bps=50,
    status=Status.SUBMITTED,
    last_seq=4,
    attempts=2,
    created_at=1000.25,
    updated_at=1001.5,
    client_order_id="c-1",
    idempotency_key="k-1",
    request_hash="h",
    dex="raydium",
    tx_hash="sig",
    executed_price=101.5,
    amount_out=2**64 - 2,
    min_amount_out=2**63,
    error_code="e",
    error_message="m",
    client_id="alice",
    order_type=OrderType.LIMIT,
    limit_price="0.000000123456789",
    expires_at=1_000_000.125,
    min_liquidity=2**64 - 3,
    last_valid_slot=2**40,
    owner="replica-1",
)


def test_columns_are_the_fields_of_the_domain() -> None:
    assert tuple(f.name for f in fields(Order)) == READ_COLUMNS
    # The owner is written by the lease statements, with its lease_until.
    assert tuple(c for c in READ_COLUMNS if c != "owner") == ORDER_COLUMNS
    assert tuple(f.name for f in fields(OrderUpdate)) == UPDATE_COLUMNS
    assert set(UPDATE_COLUMNS) <= set(ORDER_COLUMNS)


def test_every_field_is_set_in_the_round_trip_sample() -> None:
    """Otherwise a new field would round-trip as None and prove nothing."""
    assert [f.name for f in fields(Order) if getattr(EVERY_FIELD_SET, f.name) is None] == []


def test_token_amounts_and_times_are_stored_apart_from_plain_numbers() -> None:
    assert {c for c, k in KINDS.items() if k is Kind.U64} == {
        "amount",
        "amount_out",
        "min_amount_out",
        "min_liquidity",
    }
    assert {c for c, k in KINDS.items() if k is Kind.TIME} == {
        "created_at",
        "updated_at",
        "expires_at",
    }
    assert KINDS["last_valid_slot"] is Kind.INT


@pytest.mark.parametrize("rows", [sqlite.ROWS, postgres.ROWS], ids=["sqlite", "postgres"])
def test_an_order_survives_its_row(rows: OrderRows) -> None:
    written = rows.order_values(EVERY_FIELD_SET)
    assert len(written) == len(ORDER_COLUMNS)
    read = rows.order([*written, EVERY_FIELD_SET.owner])
    assert read == EVERY_FIELD_SET
    assert read.owner == EVERY_FIELD_SET.owner  # not compared by ==


@pytest.mark.parametrize("rows", [sqlite.ROWS, postgres.ROWS], ids=["sqlite", "postgres"])
def test_an_update_row_leaves_unset_columns_null(rows: OrderRows) -> None:
    values = dict(zip(UPDATE_COLUMNS, rows.update_values(OrderUpdate(amount_out=7)), strict=True))
    assert values.pop("amount_out") is not None
    assert set(values.values()) == {None}

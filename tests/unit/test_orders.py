"""The transition table: the only legal paths of an order, checked by property."""

from __future__ import annotations

import itertools
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order_engine.orders import (
    TERMINAL,
    TRANSITIONS,
    UPDATE_FIELDS,
    InvalidTransition,
    Order,
    OrderEvent,
    OrderUpdate,
    Status,
    Transition,
    check_transition,
)

HAPPY_PATH = [Status.PENDING, Status.ROUTING, Status.BUILDING, Status.SUBMITTED, Status.CONFIRMED]


def test_happy_path_is_legal() -> None:
    current: Status | None = None
    for status in HAPPY_PATH:
        check_transition(current, status)
        current = status


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.PENDING])
def test_an_order_is_born_pending(status: Status) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(None, status)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("new", list(Status))
def test_terminal_states_are_final(terminal: Status, new: Status) -> None:
    with pytest.raises(InvalidTransition, match=f"{terminal} -> {new}"):
        check_transition(terminal, new)


@pytest.mark.parametrize("status", [s for s in Status if s not in TERMINAL])
def test_every_live_state_can_fail(status: Status) -> None:
    check_transition(status, Status.FAILED)


@pytest.mark.parametrize(
    "skip",
    [
        (Status.PENDING, Status.BUILDING),
        (Status.ROUTING, Status.SUBMITTED),
        (Status.BUILDING, Status.CONFIRMED),
        (Status.PENDING, Status.CONFIRMED),
    ],
)
def test_no_stage_is_skipped(skip: tuple[Status, Status]) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(*skip)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(list(Status)), min_size=1, max_size=12))
def test_any_accepted_walk_is_a_legal_lifecycle(walk: list[Status]) -> None:
    """Feed arbitrary status sequences through the judge; whatever prefix it accepts must
    start pending, never leave a terminal state, and only confirm right after submitted."""
    accepted: list[Status] = []
    current: Status | None = None
    for status in walk:
        try:
            check_transition(current, status)
        except InvalidTransition:
            break
        accepted.append(status)
        current = status
    if accepted:
        assert accepted[0] is Status.PENDING
    for before, after in itertools.pairwise(accepted):
        assert before not in TERMINAL
        assert (before, after) in TRANSITIONS
        if after is Status.CONFIRMED:
            assert before is Status.SUBMITTED
        if after is Status.SUBMITTED:
            assert before is Status.BUILDING
    assert sum(s in TERMINAL for s in accepted) <= 1


def _order(status: Status = Status.ROUTING, last_seq: int = 2) -> Order:
    return Order(
        order_id="o-1",
        token_in="SOL",
        token_out="USDC",
        amount=1_500_000_000,
        slippage_bps=50,
        status=status,
        last_seq=last_seq,
        attempts=1,
        created_at=100.0,
        updated_at=101.0,
    )


def _transition(status: Status, seq: int, update: OrderUpdate | None = None) -> Transition:
    event = OrderEvent("o-1", seq, status, "", 102.5, {})
    return Transition(event, update or OrderUpdate())


def test_apply_moves_status_seq_time_and_the_changed_columns_only() -> None:
    before = _order()
    after = before.apply(
        _transition(Status.BUILDING, 3, OrderUpdate(dex="Meteora", min_amount_out=99))
    )
    assert (after.status, after.last_seq, after.updated_at) == (Status.BUILDING, 3, 102.5)
    assert (after.dex, after.min_amount_out) == ("Meteora", 99)
    # Columns the event leaves alone (None in the update) keep their value.
    assert after.attempts == before.attempts
    assert after.created_at == before.created_at


def test_apply_records_the_last_valid_slot_of_the_transaction_sent() -> None:
    building = _order(Status.BUILDING, 3)
    after = building.apply(
        _transition(Status.SUBMITTED, 4, OrderUpdate(tx_hash="sig", last_valid_slot=150))
    )
    assert (after.tx_hash, after.last_valid_slot) == ("sig", 150)


def test_apply_refuses_an_illegal_transition() -> None:
    with pytest.raises(InvalidTransition):
        _order(Status.ROUTING).apply(_transition(Status.CONFIRMED, 3))


@pytest.mark.parametrize("seq", [1, 2, 4])
def test_apply_refuses_an_event_that_is_not_the_next_one(seq: int) -> None:
    with pytest.raises(ValueError, match="does not follow"):
        _order(Status.ROUTING, last_seq=2).apply(_transition(Status.BUILDING, seq))


def test_every_update_field_is_an_order_field() -> None:
    order_fields = {f.name for f in fields(Order)}
    assert set(UPDATE_FIELDS) <= order_fields

"""The transition table: the only legal paths of an order, checked by property."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from order_engine.orders import (
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    Status,
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

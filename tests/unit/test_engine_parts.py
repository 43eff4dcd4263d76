"""The engine's small parts on their own: in-flight slots and task supervision."""

from __future__ import annotations

import asyncio

import pytest

from order_engine.engine.confirmations import Slots
from order_engine.engine.supervision import Supervisor


async def test_a_slot_handed_to_a_task_cancelled_before_its_first_step_comes_back() -> None:
    slots = Slots(1)
    started = asyncio.Event()

    async def wait_on_chain() -> None:
        started.set()

    async with slots.hold() as slot:
        task = asyncio.create_task(wait_on_chain())
        slot.hand_over(task)
        task.cancel()  # before the event loop ever ran it
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not started.is_set()
    assert slots.taken == 0
    async with asyncio.timeout(1), slots.hold():  # free again
        assert slots.taken == 1


async def test_a_slot_is_given_back_once_however_often_it_is_asked() -> None:
    slots = Slots(1)
    async with slots.hold() as slot:
        slot.give_back()
        slot.give_back()
    assert slots.taken == 0
    # The cap did not grow: with one slot held, none is left.
    async with slots.hold():
        assert slots.full()
    assert not slots.full()


async def test_a_slot_held_by_a_block_that_raises_comes_back() -> None:
    slots = Slots(2)
    with pytest.raises(RuntimeError):
        async with slots.hold():
            raise RuntimeError("build failed")
    assert slots.taken == 0


async def test_drain_waits_for_tasks_spawned_while_it_waits() -> None:
    supervisor = Supervisor()
    second_done = asyncio.Event()

    async def second() -> None:
        await asyncio.sleep(0)
        second_done.set()

    async def first() -> None:
        await asyncio.sleep(0)
        supervisor.spawn("confirmations", second(), "second")

    supervisor.spawn("confirmations", first(), "first")
    left = await supervisor.drain(("confirmations",), timeout=5)
    assert left == 0
    assert second_done.is_set()


async def test_drain_gives_up_at_the_timeout_and_says_how_many_are_left() -> None:
    supervisor = Supervisor()
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    supervisor.spawn("confirmations", stuck(), "stuck")
    assert await supervisor.drain(("confirmations",), timeout=0.01) == 1
    await supervisor.cancel("confirmations")
    assert supervisor.tasks("confirmations") == []


async def test_an_error_goes_to_the_handler_the_task_was_spawned_with() -> None:
    supervisor = Supervisor()
    seen: list[Exception] = []

    async def broken() -> None:
        raise ValueError("bug")

    task = supervisor.spawn("retries", broken(), "broken", on_error=seen.append)
    await task
    assert [str(e) for e in seen] == ["bug"]

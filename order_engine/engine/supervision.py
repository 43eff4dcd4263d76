"""The engine's background tasks: spawned, guarded and cancelled in one place.

Every task the engine starts (workers, confirmations, retries, lease upkeep) is spawned
here, in a named group, so a stop can wait for or cancel a group as a whole, including the
tasks spawned while it waits. An exception that escapes a task's work goes to the handler
it was spawned with, never to the event loop's "exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("order_engine.engine")

ErrorHandler = Callable[[Exception], None]


class Supervisor:
    def __init__(self) -> None:
        self._groups: dict[str, set[asyncio.Task[None]]] = {}

    def spawn(
        self,
        group: str,
        coro: Coroutine[Any, Any, None],
        name: str,
        *,
        on_error: ErrorHandler | None = None,
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(self.guard(coro, name, on_error), name=name)
        tasks = self._groups.setdefault(group, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        # A task cancelled before its first step never starts `coro`: close it quietly.
        task.add_done_callback(lambda _: coro.close())
        return task

    @staticmethod
    async def guard(
        coro: Coroutine[Any, Any, None], name: str, on_error: ErrorHandler | None
    ) -> None:
        """Run `coro`; an exception goes to `on_error` (or the log), cancellation goes on."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if on_error is None:
                log.exception("%s: unexpected error", name)
            else:
                on_error(exc)

    def tasks(self, *groups: str) -> list[asyncio.Task[None]]:
        return [task for group in groups for task in self._groups.get(group, ())]

    async def drain(self, groups: tuple[str, ...], timeout: float) -> int:
        """Wait until these groups are empty, tasks spawned meanwhile included, or until
        `timeout`; returns how many tasks were still running then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (running := self.tasks(*groups)) and (left := deadline - loop.time()) > 0:
            await asyncio.wait(running, timeout=left)
        return len(self.tasks(*groups))

    async def cancel(self, *groups: str) -> None:
        await cancel_all(self.tasks(*groups))


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task

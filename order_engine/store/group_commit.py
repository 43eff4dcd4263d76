"""Group commit: many concurrent writers, one transaction per batch.

Writers put their write on a queue and await its future. One task drains the queue into
batches and hands each batch to the backend's commit function, which resolves every write's
future (with None, or with the error that write alone deserves). A burst of N events then
costs one commit (one fsync), not N.

A commit function that raises instead (a row it cannot encode, a value its database refuses:
an error it does not expect) has committed nothing; the batch is then committed write by
write, so the one write at fault fails alone, with its own error, and the others of its
batch commit as if it had never been queued with them.

A batch that fails as an outage is noted (`failing`): readiness reports an outage of writes
(a full disk) that reads, still answered, would not show, until the store's probe writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from order_engine.orders import Order, OrderEvent, Transition
from order_engine.store.base import StoreUnavailable


@dataclass(slots=True)
class CreateWrite:
    order: Order
    first: OrderEvent
    owned: bool  # leased to this replica at once (it executes the order)
    done: asyncio.Future[None]


@dataclass(slots=True)
class AppendWrite:
    transition: Transition
    done: asyncio.Future[None]


Write = CreateWrite | AppendWrite
CommitBatch = Callable[[list[Write]], Awaitable[None]]


def succeed(write: Write) -> None:
    if not write.done.done():
        write.done.set_result(None)


def fail(write: Write, exc: BaseException) -> None:
    if not write.done.done():
        write.done.set_exception(exc)


class GroupCommit:
    def __init__(self, commit: CommitBatch, *, max_batch: int, name: str) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._name = name
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue()  # None: stop
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # the most recent batches (tests)
        self.on_batch: Callable[[int], None] | None = None  # metrics
        # Why writes fail: the error of the last batch the store failed as a whole, until the
        # backend's probe (a write that needs room, as a full disk has none) succeeds. A
        # small write that still fits in a page proves nothing: it does not clear it.
        self.failing: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        """Commit everything already queued, then stop (nothing to do after `abort`)."""
        self._closed = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait(None)
            await self._task

    async def abort(self) -> None:
        """Stop now, dropping queued writes, as a crash would (recovery tests)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def create(self, order: Order, first: OrderEvent, owned: bool) -> None:
        await self._submit(CreateWrite(order, first, owned, self._future()))

    async def append(self, transition: Transition) -> None:
        await self._submit(AppendWrite(transition, self._future()))

    @staticmethod
    def _future() -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, write: Write) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")
        self._queue.put_nowait(write)
        await write.done

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Write] = []
            item = await self._queue.get()
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if not batch:
                continue
            try:
                await self._commit(batch)
            except Exception as exc:
                if len(batch) == 1:
                    fail(batch[0], exc)
                else:
                    await self._commit_each(batch)
            else:
                self._record(len(batch))
            self._note(batch)

    def _note(self, batch: list[Write]) -> None:
        """A batch that failed as an outage says the store does not take writes, and why."""
        errors = [w.done.exception() for w in batch if w.done.done() and not w.done.cancelled()]
        if outage := next((e for e in errors if isinstance(e, StoreUnavailable)), None):
            self.failing = str(outage)

    async def _commit_each(self, batch: list[Write]) -> None:
        for write in batch:
            if write.done.done():
                continue  # resolved before the commit function raised: not written again
            try:
                await self._commit([write])
            except Exception as exc:
                fail(write, exc)
            else:
                self._record(1)

    def _record(self, size: int) -> None:
        self.batch_sizes.append(size)
        if self.on_batch is not None:
            self.on_batch(size)

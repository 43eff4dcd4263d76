"""A real store that fails, or stops, on the calls a test chooses.

`FaultyStore` wraps a real store (SQLite in the `faulty_store` fixture) and forwards every
method of the `Store` protocol to it; its `faults` decide, call by call, what happens first:

    fault = faulty_store.faults.fail_next(
        "append", StoreError("disk"), when=lambda t: t.event.status is Status.ROUTING
    )
    ...
    await fault.wait()                        # it has been raised
    faulty_store.faults.count("append")       # calls so far, failed ones included

`when` is called with the call's own arguments (`create(order, first, owned=...)` gets them
all, so `lambda order, first, **_: ...`); a fault without `when` takes the next call of
its method. Faults are tried in the order they were added, the first that matches applies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from order_engine.orders import Order, OrderEvent, Transition
from order_engine.store import OrderQuery, Store

_P = ParamSpec("_P")
_T = TypeVar("_T")
Predicate = Callable[..., bool]

# What the protocol asks of every store, read from it so that a method added there is
# noticed (tests check that FaultyStore forwards each of these).
STORE_METHODS = frozenset(
    name for name, value in vars(Store).items() if not name.startswith("_") and callable(value)
)
SYNC_METHODS = frozenset({"observe_batches"})
WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    failed: bool  # a fault raised instead of (or after, `lost_reply`) the real call
    at: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Fault:
    """Raise `error` on the matching calls: `times` of them (None: every one until removed).
    `lost_reply`: the real call runs first (a write commits) and the error is raised after
    it, as when the connection dies before the reply arrives."""

    method: str
    error: BaseException
    when: Predicate | None = None
    times: int | None = 1
    lost_reply: bool = False
    raised: int = 0
    fired: asyncio.Event = field(default_factory=asyncio.Event)

    def spent(self) -> bool:
        return self.times is not None and self.raised >= self.times

    async def wait(self, timeout: float = WAIT_S) -> None:
        """Until it has been raised at least once."""
        async with asyncio.timeout(timeout):
            await self.fired.wait()


@dataclass(eq=False)
class Hold:
    """The next matching call waits, before reaching the store, until `release()`."""

    method: str
    when: Predicate | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    call: Call | None = None

    def release(self) -> None:
        self.released.set()

    async def wait(self, timeout: float = WAIT_S) -> Call:
        """Until a call is held here; returns it."""
        async with asyncio.timeout(timeout):
            await self.reached.wait()
        assert self.call is not None
        return self.call


class Faults:
    """What a FaultyStore does before (or after) forwarding each call, and what it saw."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._faults: list[Fault] = []
        self._holds: list[Hold] = []
        self._seen = asyncio.Event()  # replaced by a fresh one at each call

    def fail_next(
        self,
        method: str,
        error: BaseException,
        *,
        when: Predicate | None = None,
        times: int | None = 1,
        lost_reply: bool = False,
    ) -> Fault:
        _check(method)
        fault = Fault(method, error, when, times, lost_reply)
        self._faults.append(fault)
        return fault

    def fail_always(
        self,
        method: str,
        error: BaseException,
        *,
        when: Predicate | None = None,
        lost_reply: bool = False,
    ) -> Fault:
        """Every matching call fails until `remove(fault)` or `clear()`: an outage."""
        return self.fail_next(method, error, when=when, times=None, lost_reply=lost_reply)

    def hold_next(self, method: str, *, when: Predicate | None = None) -> Hold:
        _check(method)
        if method in SYNC_METHODS:
            raise ValueError(f"{method} is not a coroutine: it cannot be held")
        hold = Hold(method, when)
        self._holds.append(hold)
        return hold

    def remove(self, fault: Fault) -> None:
        self._faults.remove(fault)

    def clear(self) -> None:
        """No more faults; held calls go on."""
        self._faults.clear()
        for hold in self._holds:
            hold.release()
        self._holds.clear()

    def count(self, method: str, *, when: Predicate | None = None) -> int:
        """Calls of `method` so far (matching `when`), failed ones included."""
        return sum(1 for c in self.calls if c.method == method and _matches(when, c))

    async def wait_for_call(
        self, method: str, *, when: Predicate | None = None, timeout: float = WAIT_S
    ) -> Call:
        """The first call of `method` (matching `when`), made already or made next."""
        async with asyncio.timeout(timeout):
            while True:
                for call in self.calls:
                    if call.method == method and _matches(when, call):
                        return call
                await self._seen.wait()

    # -- used by FaultyStore ------------------------------------------------------------

    def _fault_for(self, call: Call) -> Fault | None:
        for fault in self._faults:
            if fault.method == call.method and not fault.spent() and _matches(fault.when, call):
                fault.raised += 1
                fault.fired.set()
                if fault.spent():
                    self._faults.remove(fault)
                return fault
        return None

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        seen, self._seen = self._seen, asyncio.Event()
        seen.set()

    async def _held(self, call: Call) -> None:
        for hold in self._holds:
            if hold.method == call.method and _matches(hold.when, call):
                self._holds.remove(hold)
                hold.call = call
                hold.reached.set()
                await hold.released.wait()
                return


def _check(method: str) -> None:
    if method not in STORE_METHODS:
        raise ValueError(f"{method!r} is not a method of the Store protocol")


def _matches(when: Predicate | None, call: Call) -> bool:
    return when is None or bool(when(*call.args, **call.kwargs))


class FaultyStore:
    """A `Store` that forwards to `inner`, with `faults` applied first."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.faults = Faults()

    async def _forward(
        self,
        method: str,
        real: Callable[_P, Awaitable[_T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        probe = Call(method, args, dict(kwargs), failed=False)
        await self.faults._held(probe)
        fault = self.faults._fault_for(probe)
        self.faults._record(Call(method, args, dict(kwargs), failed=fault is not None))
        if fault is not None and not fault.lost_reply:
            raise fault.error
        result = await real(*args, **kwargs)
        if fault is not None:
            raise fault.error
        return result

    # -- the Store protocol, method by method -------------------------------------------

    @property
    def owner(self) -> str:
        return self.inner.owner

    async def open(self) -> None:
        await self._forward("open", self.inner.open)

    async def close(self) -> None:
        await self._forward("close", self.inner.close)

    async def create(self, order: Order, first: OrderEvent, *, owned: bool = True) -> None:
        await self._forward("create", self.inner.create, order, first, owned=owned)

    async def append(self, transition: Transition) -> None:
        await self._forward("append", self.inner.append, transition)

    async def claim(self, limit: int, *, own_too: bool = False) -> list[Order]:
        return await self._forward("claim", self.inner.claim, limit, own_too=own_too)

    async def renew(self, order_ids: list[str]) -> int:
        return await self._forward("renew", self.inner.renew, order_ids)

    async def release(self) -> int:
        return await self._forward("release", self.inner.release)

    async def get(self, order_id: str) -> Order | None:
        return await self._forward("get", self.inner.get, order_id)

    async def by_idempotency_key(self, key: str) -> Order | None:
        return await self._forward("by_idempotency_key", self.inner.by_idempotency_key, key)

    async def forget_idempotency_key(self, key: str) -> None:
        await self._forward("forget_idempotency_key", self.inner.forget_idempotency_key, key)

    async def events(self, order_id: str, after: int = 0) -> list[OrderEvent]:
        return await self._forward("events", self.inner.events, order_id, after)

    async def find(self, query: OrderQuery) -> list[Order]:
        return await self._forward("find", self.inner.find, query)

    async def last_seqs(self, order_ids: list[str]) -> dict[str, int]:
        return await self._forward("last_seqs", self.inner.last_seqs, order_ids)

    async def count_by_status(self) -> dict[str, int]:
        return await self._forward("count_by_status", self.inner.count_by_status)

    async def unfinished(self) -> list[Order]:
        return await self._forward("unfinished", self.inner.unfinished)

    async def ping(self) -> None:
        await self._forward("ping", self.inner.ping)

    def observe_batches(self, callback: Callable[[int], None]) -> None:
        call = Call("observe_batches", (callback,), {}, failed=False)
        fault = self.faults._fault_for(call)
        self.faults._record(Call(call.method, call.args, {}, failed=fault is not None))
        if fault is not None and not fault.lost_reply:
            raise fault.error
        self.inner.observe_batches(callback)
        if fault is not None:
            raise fault.error

    async def on_new_orders(self, callback: Callable[[], None]) -> None:
        await self._forward("on_new_orders", self.inner.on_new_orders, callback)

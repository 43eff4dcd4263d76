"""Publishing never waits on Redis: a real Redis behind a proxy that stops forwarding (a
Redis that stopped answering, as when packets are dropped), and a second hub that hears
the first through Redis as another replica would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from order_engine.hub.base import Subscription
from order_engine.hub.redis import CHANNEL, RedisHub
from order_engine.orders import OrderEvent, Status
from tests.support.processes import free_port
from tests.support.proxy import TcpProxy
from tests.support.services import REDIS_HOST, REDIS_PORT, require_redis

ORDER = "00000000-0000-4000-8000-0000000000aa"
# Far below the hub's publish timeout: a publish that waited on Redis at all would miss it.
PROMPT_S = 0.2


def event(seq: int) -> OrderEvent:
    return OrderEvent(ORDER, seq, Status.ROUTING, "m", 1.0, {"attempt": seq})


class HoldingProxy(TcpProxy):
    """While held, takes what either side sends and forwards none of it; released, it
    delivers what it held."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._flowing = asyncio.Event()
        self._flowing.set()

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def _pipe(  # type: ignore[override]
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()


@asynccontextmanager
async def replicas(**publisher: Any) -> AsyncIterator[tuple[HoldingProxy, RedisHub, RedisHub]]:
    """A proxy, a hub that reaches Redis through it, and one that reaches Redis directly."""
    require_redis()
    channel = f"{CHANNEL}:test:{free_port()}"
    async with AsyncExitStack() as stack:
        proxy = HoldingProxy(REDIS_HOST, REDIS_PORT)
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        hubs = []
        for port, options in ((proxy.port, publisher), (REDIS_PORT, {})):
            hub = RedisHub(
                f"redis://{REDIS_HOST}:{port}/0", channel=channel, poll_interval=0.05, **options
            )
            await hub.start()
            stack.push_async_callback(hub.stop)
            await hub.wait_connected(5)
            hubs.append(hub)
        stack.callback(proxy.release)  # first thing on the way out: no stop waits on a hold
        yield proxy, hubs[0], hubs[1]


async def next_event(sub: Subscription, timeout: float = 5) -> OrderEvent | None:
    async with asyncio.timeout(timeout):
        return await sub.next()


async def publish_promptly(hub: RedisHub, *events: OrderEvent) -> None:
    for e in events:
        async with asyncio.timeout(PROMPT_S):
            await hub.publish(e)


async def test_publish_does_not_wait_for_redis_and_what_it_queued_arrives_later() -> None:
    async with replicas(publish_timeout=30.0) as (proxy, a, b), b.subscribe(ORDER) as sub:
        await publish_promptly(a, event(1))
        assert await next_event(sub) == event(1)

        proxy.hold()
        async with a.subscribe(ORDER) as local:
            await publish_promptly(a, event(2), event(3), event(4))
            # This process's own watchers do not wait for Redis either.
            assert [await next_event(local, PROMPT_S) for _ in range(3)] == [
                event(2),
                event(3),
                event(4),
            ]
        proxy.release()
        assert [await next_event(sub) for _ in range(3)] == [event(2), event(3), event(4)]
        assert a.dropped == 0


async def test_a_full_outbox_drops_and_the_other_replicas_are_told_to_resync() -> None:
    async with (
        replicas(outbox_size=2, publish_timeout=30.0) as (proxy, a, b),
        b.subscribe(ORDER) as sub,
    ):
        proxy.hold()
        await publish_promptly(a, *(event(seq) for seq in range(1, 11)))
        assert a.dropped > 0
        proxy.release()
        # What got through, then the resync: the dropped events are read from the store.
        while (got := await next_event(sub)) is not None:
            assert got.seq <= 10, got
        # And Redis carries events again.
        await publish_promptly(a, event(11))
        while (got := await next_event(sub)) != event(11):
            assert got is None or got.seq <= 10, got


async def test_stop_publishes_what_is_still_queued() -> None:
    async with replicas(publish_timeout=30.0) as (proxy, a, b), b.subscribe(ORDER) as sub:
        proxy.hold()
        await publish_promptly(a, event(1), event(2), event(3))
        stopping = asyncio.create_task(a.stop())
        proxy.release()
        async with asyncio.timeout(10):
            await stopping
        assert [await next_event(sub) for _ in range(3)] == [event(1), event(2), event(3)]
        assert a.dropped == 0


async def test_stop_gives_up_on_a_redis_that_does_not_answer() -> None:
    flush_s = 0.2
    async with replicas(publish_timeout=30.0, flush_timeout=flush_s) as (proxy, a, _):
        proxy.hold()
        await publish_promptly(a, event(1), event(2), event(3))
        async with asyncio.timeout(flush_s + 5):
            await a.stop()
        assert a.dropped == 3

"""The Hub contract, against every hub: the in-memory one, and the Redis one both within one
process and between two (a replica's events reaching another replica's watchers).

Delivery between processes goes through Redis and may come a little later than `publish`
returns: every read waits, with a timeout, for what must come. To show that something did
NOT come, a later event is published and must be the next one read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from order_engine.hub import Hub, LocalFanout, MemoryHub, Subscription
from order_engine.hub.redis import CHANNEL, RedisHub
from order_engine.orders import OrderEvent, Status
from tests.support.services import require_redis

INBOX = 4  # per-order watchers' inbox, small so that falling behind is quick
FIREHOSE_INBOX = 4096  # the firehose's, which no hub lets a caller change
A = "00000000-0000-4000-8000-00000000000a"
B = "00000000-0000-4000-8000-00000000000b"


def event(order_id: str, seq: int) -> OrderEvent:
    return OrderEvent(order_id, seq, Status.ROUTING, "m", 1.0, {"attempt": seq})


async def next_event(sub: Subscription, timeout: float = 5) -> OrderEvent | None:
    async with asyncio.timeout(timeout):
        return await sub.next()


@dataclass
class Hubs:
    """Where events are published, and where they are watched: the same hub, or another
    process's."""

    publisher: Hub
    watcher: Hub

    async def publish(self, order_id: str, *seqs: int) -> None:
        for seq in seqs:
            await self.publisher.publish(event(order_id, seq))

    async def barrier(self) -> None:
        """Until everything published so far has reached the watching hub: a marker
        published after it has (one publisher's events arrive in publish order)."""
        marker = str(uuid.uuid4())
        async with self.watcher.subscribe(marker) as sub:
            await self.publisher.publish(event(marker, 1))
            assert await next_event(sub) == event(marker, 1)

    def watcher_count(self) -> int:
        hub: Any = self.watcher  # not in the protocol, but every hub counts its watchers
        count: int = hub.watcher_count
        return count


async def redis_hub(stack: AsyncExitStack, channel: str) -> RedisHub:
    hub = RedisHub(require_redis(), inbox_size=INBOX, channel=channel)
    await hub.start()
    stack.push_async_callback(hub.stop)
    await hub.wait_connected(5)
    return hub


@pytest.fixture(params=["memory", "redis", "redis-replicas"])
async def hubs(request: pytest.FixtureRequest) -> AsyncIterator[Hubs]:
    async with AsyncExitStack() as stack:
        hub: Hub
        if request.param == "memory":
            hub = MemoryHub(inbox_size=INBOX)
            await hub.start()
            stack.push_async_callback(hub.stop)
            yield Hubs(hub, hub)
            return
        # A channel of this test's own: nobody else's events, nobody else hears ours.
        channel = f"{CHANNEL}:test:{uuid.uuid4().hex}"
        if request.param == "redis":
            hub = await redis_hub(stack, channel)
            yield Hubs(hub, hub)
        else:
            yield Hubs(await redis_hub(stack, channel), await redis_hub(stack, channel))


async def test_a_watcher_gets_its_orders_events_in_publish_order(hubs: Hubs) -> None:
    async with hubs.watcher.subscribe(A) as sub:
        for first in range(1, 20, INBOX):  # a full inbox at a time: none is dropped
            seqs = range(first, first + INBOX)
            await hubs.publish(A, *seqs)
            assert [await next_event(sub) for _ in seqs] == [event(A, s) for s in seqs]


async def test_every_watcher_of_an_order_gets_every_event(hubs: Hubs) -> None:
    async with AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(hubs.watcher.subscribe(A)) for _ in range(10)]
        await hubs.publish(A, 1, 2, 3)
        for sub in subs:
            assert [await next_event(sub) for _ in range(3)] == [event(A, s) for s in (1, 2, 3)]


async def test_a_watcher_gets_no_other_orders_events(hubs: Hubs) -> None:
    async with hubs.watcher.subscribe(A) as a, hubs.watcher.subscribe(B) as b:
        await hubs.publish(B, 1)
        await hubs.publish(A, 1)
        await hubs.publish(B, 2)
        await hubs.publish(A, 2)
        assert [await next_event(a), await next_event(a)] == [event(A, 1), event(A, 2)]
        assert [await next_event(b), await next_event(b)] == [event(B, 1), event(B, 2)]


async def test_an_unwatched_orders_events_go_nowhere_and_are_not_replayed(hubs: Hubs) -> None:
    await hubs.publish(A, 1)  # nobody watches: nothing fails
    await hubs.barrier()
    async with hubs.watcher.subscribe(A) as sub:
        await hubs.publish(A, 2)
        # Subscribing is not reading the past: that is the store's job.
        assert await next_event(sub) == event(A, 2)


async def test_the_firehose_gets_every_orders_events_in_publish_order(hubs: Hubs) -> None:
    async with hubs.watcher.subscribe_all() as firehose, hubs.watcher.subscribe(A) as a:
        await hubs.publish(A, 1)
        await hubs.publish(B, 1)
        await hubs.publish(A, 2)
        await hubs.publish(B, 2)
        expected = [event(A, 1), event(B, 1), event(A, 2), event(B, 2)]
        assert [await next_event(firehose) for _ in range(4)] == expected
        assert [await next_event(a), await next_event(a)] == [event(A, 1), event(A, 2)]


async def test_a_watcher_that_falls_behind_is_told_once_then_gets_what_follows(
    hubs: Hubs,
) -> None:
    async with hubs.watcher.subscribe(A) as lazy, hubs.watcher.subscribe(A) as reader:
        # The reader keeps up, one event at a time: the lazy watcher's falling behind is
        # its own, and costs no one else an event.
        for seq in range(1, INBOX + 3):
            await hubs.publish(A, seq)
            assert await next_event(reader) == event(A, seq)
        # Its inbox was dropped: it is told to re-read the store after its last seq, once.
        assert await next_event(lazy) is None
        await hubs.publish(A, INBOX + 3)
        assert await next_event(lazy) == event(A, INBOX + 3)
        assert await next_event(reader) == event(A, INBOX + 3)


async def test_the_firehose_falls_behind_the_same_way(hubs: Hubs) -> None:
    async with hubs.watcher.subscribe_all() as firehose:
        await hubs.publish(A, *range(1, FIREHOSE_INBOX + 2))
        await hubs.barrier()
        assert await next_event(firehose) is None
        await hubs.publish(B, 1)
        assert await next_event(firehose) == event(B, 1)


async def test_a_watcher_that_leaves_is_forgotten_and_the_others_stay(hubs: Hubs) -> None:
    before = hubs.watcher_count()
    async with hubs.watcher.subscribe(A) as staying:
        async with hubs.watcher.subscribe(A), hubs.watcher.subscribe(B):
            assert hubs.watcher_count() == before + 3
        assert hubs.watcher_count() == before + 1
        await hubs.publish(B, 1)  # its last watcher left: nothing fails
        await hubs.publish(A, 1)
        assert await next_event(staying) == event(A, 1)
    assert hubs.watcher_count() == before


async def test_a_running_hub_answers_ping(hubs: Hubs) -> None:
    await hubs.publisher.ping()
    await hubs.watcher.ping()


async def test_only_watchers_behind_are_told() -> None:
    """The audit of the fan-out every hub is built on (the Redis hub runs it): a watcher
    whose last delivered seq is behind the store's is sent back to the store, no other."""
    fanout = LocalFanout()
    async with fanout.subscribe("a") as behind, fanout.subscribe("a") as ahead:
        behind.position, ahead.position = 1, 3
        assert fanout.resync_behind({"a": 3, "b": 7}) == 1
        assert (behind.lagged, ahead.lagged) == (True, False)

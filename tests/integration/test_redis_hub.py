"""The Redis hub against real Redis servers, including one this test stops and restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from order_engine.hub.redis import CHANNEL, RedisHub
from order_engine.orders import OrderEvent, OrderUpdate, Status, Transition
from order_engine.store import store_from_url
from tests.integration.test_store import new_order
from tests.support.processes import free_port, redis_server
from tests.support.services import REDIS_HOST, REDIS_PORT, require_redis

ORDER = "00000000-0000-4000-8000-000000000001"


def event(seq: int) -> OrderEvent:
    return OrderEvent(ORDER, seq, Status.ROUTING, "m", 1.0, {"attempt": seq})


@asynccontextmanager
async def hub(url: str) -> AsyncIterator[RedisHub]:
    h = RedisHub(url, poll_interval=0.05)
    await h.start()
    try:
        await h.wait_connected(5)
        yield h
    finally:
        await h.stop()


async def next_event(sub: object, timeout: float = 5) -> OrderEvent | None:
    async with asyncio.timeout(timeout):
        return await sub.next()  # type: ignore[attr-defined,no-any-return]


async def test_one_subscription_per_process_whatever_the_watchers() -> None:
    require_redis()
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    channel = f"{CHANNEL}:test:{free_port()}"
    async with AsyncExitStack() as stack:
        hubs = []
        for _ in range(2):
            h = RedisHub(url, channel=channel)
            await h.start()
            stack.push_async_callback(h.stop)
            await h.wait_connected(5)
            hubs.append(h)
        a, b = hubs
        subs = [await stack.enter_async_context(b.subscribe(ORDER)) for _ in range(10)]
        await a.publish(event(1))
        for sub in subs:
            assert await next_event(sub) == event(1)
        client = aioredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            numsub = dict(await client.pubsub_numsub(channel))
        finally:
            await client.aclose()
        assert numsub[channel.encode()] == 2


async def test_watchers_are_told_to_resync_while_redis_is_down(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    async with (
        redis_server(port, tmp_path) as server,
        hub(url) as a,
        hub(url) as b,
        b.subscribe(ORDER) as sub,
    ):
        await a.publish(event(1))
        assert await next_event(sub) == event(1)

        server.kill()
        await server.wait()
        await a.publish(event(2))  # must not raise: the engine goes on without Redis
        # b cannot hear a's event; its watcher is told to re-read the store instead.
        assert await next_event(sub) is None
        assert await next_event(sub) is None  # and again, while Redis stays down

        async with redis_server(port, tmp_path):
            await b.wait_connected(10)
            await a.wait_connected(10)
            await a.publish(event(3))
            seen = [await next_event(sub)]
            while seen[-1] is None:
                seen.append(await next_event(sub))
            assert seen[-1] == event(3)


async def test_a_watcher_behind_the_store_is_sent_back_to_it(tmp_path: Path) -> None:
    """A replica committed an event and died before publishing it: nobody will ever
    publish it. The audit compares the watcher's position with the store and tells it."""
    require_redis()
    store = store_from_url(f"sqlite:///{tmp_path}/orders.db", sqlite_synchronous="NORMAL")
    await store.open()
    order, first = new_order()
    await store.create(order, first)
    h = RedisHub(
        f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        channel=f"{CHANNEL}:test:{free_port()}",
        last_seqs=store.last_seqs,
        audit_interval=0.05,
    )
    await h.start()
    try:
        async with h.subscribe(order.order_id) as behind, h.subscribe(order.order_id) as ahead:
            behind.position = 1
            ahead.position = 2
            await store.append(
                Transition(
                    OrderEvent(order.order_id, 2, Status.ROUTING, "m", 2.0, {}), OrderUpdate()
                )
            )  # committed, never published
            assert await next_event(behind) is None
            assert h.watcher_count == 2
    finally:
        await h.stop()
        await store.close()

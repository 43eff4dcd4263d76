"""Redis fan-out between replicas: ONE subscription per process, dispatched locally.

Every replica publishes its committed events to one channel and listens on it; the listener
hands each event to this process's watchers. A replica's own events are also dispatched
locally at once (lower latency, and they still flow when Redis is down); watchers drop the
duplicates by seq. Publishing never waits on Redis: events go into a bounded outbox that one
task sends in pipelined batches, so a slow Redis slows no stage of any order. Redis is never
trusted to be complete: while it is unreachable, watchers are told every `poll_interval` to
re-read the store, and once more after reconnecting; a replica that could not publish (Redis
failing, or the outbox full) broadcasts a "re-sync" as soon as Redis takes it again, so the
other replicas' watchers re-read the store too. And a replica killed between committing an
event and publishing it can tell nobody: so every `audit_interval` each process compares
its watchers' positions with the store's last seqs (one query for all of them) and sends
the ones behind to the store. A client never misses an event, it only gets it a little later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from order_engine.hub.base import LocalFanout, Subscription
from order_engine.orders import OrderEvent, Status

log = logging.getLogger("order_engine.hub.redis")

CHANNEL = "order_engine:events"
PUBLISH_TIMEOUT_S = 1.0
# Events awaiting Redis; beyond this they are dropped (they are in the store) and announced.
OUTBOX_SIZE = 10_000
OUTBOX_BATCH = 256  # published in one round trip
# How long a stopping hub tries to publish what is still queued.
FLUSH_TIMEOUT_S = 2.0
LastSeqs = Callable[[list[str]], Awaitable[dict[str, int]]]
# Control message: "some of my events never reached you; re-read the store".
RESYNC = b'{"resync":true}'


def encode(origin: bytes, event: OrderEvent) -> bytes:
    """`origin NL orderId NL json`: a receiver skips its own events and orders nobody
    watches there without parsing any JSON."""
    return b"%s\n%s\n%s" % (origin, event.order_id.encode(), orjson.dumps(event.to_message()))


def decode(body: bytes) -> OrderEvent:
    m: dict[str, Any] = orjson.loads(body)
    return OrderEvent(m["orderId"], m["seq"], Status(m["status"]), m["message"], m["ts"], m["data"])


class RedisHub:
    def __init__(
        self,
        url: str,
        *,
        inbox_size: int = 64,
        poll_interval: float = 0.5,
        channel: str = CHANNEL,
        last_seqs: LastSeqs | None = None,
        audit_interval: float = 5.0,
        outbox_size: int = OUTBOX_SIZE,
        publish_timeout: float = PUBLISH_TIMEOUT_S,
        flush_timeout: float = FLUSH_TIMEOUT_S,
    ) -> None:
        # Tells this process's own messages apart when Redis echoes them back.
        self._origin = secrets.token_hex(8).encode()
        self._last_seqs = last_seqs
        self._audit_interval = audit_interval
        self._auditor: asyncio.Task[None] | None = None
        self._url = url
        self._channel = channel
        self._poll_interval = poll_interval
        self._fanout = LocalFanout(inbox_size)
        self._redis: aioredis.Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._announcer: asyncio.Task[None] | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(outbox_size)
        self._sender: asyncio.Task[None] | None = None
        self._sending = 0  # events taken from the outbox, not yet published
        self._publish_timeout = publish_timeout
        self._flush_timeout = flush_timeout
        self._shedding = False  # dropping since the last batch Redis took: warned once
        self.dropped = 0  # events never published (the store has them; resyncs cover them)
        self.connected = False

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self._url,
            socket_connect_timeout=1,
            socket_timeout=None,
            health_check_interval=5,
            # A pooled connection that died with the server fails once; the retry reconnects.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._listener = asyncio.create_task(self._listen(), name="redis-hub-listener")
        self._sender = asyncio.create_task(self._send_outbox(), name="redis-hub-outbox")
        if self._last_seqs is not None:
            self._auditor = asyncio.create_task(self._audit(), name="redis-hub-audit")

    async def stop(self) -> None:
        sender, self._sender = self._sender, None  # what is published from now on stays local
        if sender is not None:
            await self._flush(sender)
        for task in (self._listener, self._announcer, self._auditor, sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._redis is not None:
            await self._redis.aclose()

    async def _flush(self, sender: asyncio.Task[None]) -> None:
        if sender.done():
            return
        try:
            async with asyncio.timeout(self._flush_timeout):
                await self._outbox.join()
        except TimeoutError:
            # The other replicas' audits find what their watchers missed in the store.
            left = self._outbox.qsize() + self._sending
            self.dropped += left
            log.warning("redis hub stopping: %d event(s) not published in time", left)

    async def wait_connected(self, timeout: float) -> None:
        """For start-up checks and tests: until the subscription is live."""
        async with asyncio.timeout(timeout):
            await self._subscribed.wait()

    def subscribe(self, order_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._fanout.subscribe(order_id)

    def subscribe_all(self) -> AbstractAsyncContextManager[Subscription]:
        return self._fanout.subscribe_all()

    def recent(self, order_id: str, after: int) -> list[OrderEvent] | None:
        # Other replicas publish too, and their events may be lost on the way: the store.
        return None

    async def publish(self, event: OrderEvent) -> None:
        self._fanout.dispatch(event)
        if self._sender is None:
            return
        try:
            self._outbox.put_nowait(encode(self._origin, event))
        except asyncio.QueueFull:
            if not self._shedding:
                log.warning("redis outbox full: events are dropped and announced as missed")
                self._shedding = True
            self._missed(1)

    def _missed(self, count: int) -> None:
        """The events are committed; the other replicas' watchers will re-read the store
        once they hear that something was missed."""
        self.dropped += count
        if self._announcer is None or self._announcer.done():
            self._announcer = asyncio.create_task(self._announce_missed(), name="redis-hub-resync")

    async def _send_outbox(self) -> None:
        assert self._redis is not None
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < OUTBOX_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            self._sending = len(batch)
            try:
                # Bounded: a Redis that drops packets must not hold the outbox up forever.
                async with asyncio.timeout(self._publish_timeout):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for body in batch:
                            pipe.publish(self._channel, body)
                        await pipe.execute()
                self._shedding = False
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("redis publish of %d event(s) failed: %s", len(batch), exc)
                self._missed(len(batch))
            except Exception:  # a bug must not stop publishing for good
                log.exception("redis publish failed unexpectedly")
                self._missed(len(batch))
            finally:
                self._sending = 0
                for _ in batch:
                    self._outbox.task_done()

    async def _audit(self) -> None:
        assert self._last_seqs is not None
        while True:
            await asyncio.sleep(self._audit_interval)
            watched = self._fanout.watched()
            if not watched:
                continue
            try:
                stored = await self._last_seqs(watched)
            except Exception as exc:  # the store's outage is reported elsewhere
                log.debug("watcher audit skipped: %s", exc)
                continue
            told = self._fanout.resync_behind(stored)
            if told:
                log.info("%d watcher(s) behind the store: re-reading it", told)

    async def _announce_missed(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                async with asyncio.timeout(self._publish_timeout):
                    await self._redis.publish(self._channel, RESYNC)
                return
            except (RedisError, OSError, TimeoutError):
                continue

    async def ping(self) -> None:
        if self._redis is None:
            raise RedisError("not started")
        await self._redis.ping()

    @property
    def watcher_count(self) -> int:
        return self._fanout.watcher_count

    async def _listen(self) -> None:
        assert self._redis is not None
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._set_connected(True)
                backoff = 0.1
                # Anything published while we were away is in the store: re-read it.
                self._fanout.resync_all()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._dispatch_remote(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("redis unavailable (%s); watchers fall back to the store", exc)
                self._set_connected(False)
            finally:
                with contextlib.suppress(Exception):
                    # Typed in some redis-py releases, not in others.
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
            await self._poll_while_down(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _poll_while_down(self, duration: float) -> None:
        """While Redis is away, watchers re-read the store on a short period."""
        self._fanout.resync_all()
        waited = 0.0
        while waited < duration:
            step = min(self._poll_interval, duration - waited)
            await asyncio.sleep(step)
            waited += step
            self._fanout.resync_all()

    def _dispatch_remote(self, raw: bytes | str) -> None:
        if isinstance(raw, str):
            raw = raw.encode()
        if raw == RESYNC:
            self._fanout.resync_all()
            return
        origin, _, rest = raw.partition(b"\n")
        order_id, _, body = rest.partition(b"\n")
        if origin == self._origin or not self._fanout.wants(order_id.decode(errors="replace")):
            return  # dispatched locally already, or nobody here watches that order
        try:
            event = decode(body)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed message on %s", self._channel)
            return
        self._fanout.dispatch(event)

    def _set_connected(self, connected: bool) -> None:
        if connected and not self.connected:
            log.info("redis hub subscribed to %s", self._channel)
        self.connected = connected
        if connected:
            self._subscribed.set()
        else:
            self._subscribed.clear()

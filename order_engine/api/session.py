"""The trading session: one WebSocket (`GET /api/session`) carrying many orders, for bots.

Requests `{"id", "op": "submit"|"cancel"|"watch", ...}` are answered by id with
`{"id", "result"}` or `{"id", "error"}`, in the order they finish (a bot matches them by id),
with the same checks, answers and error codes as HTTP. Every order submitted or watched on
the session is followed: its events are pushed as `{"event": {...}}`, exactly the status
stream's messages, in seq order with no gap and no duplicate, until its terminal event
(session_follow.py: the status stream's mechanism).

Each request runs as its own task, and a submitted or watched order's task goes on to follow
it: a coroutine and a hub inbox per order in flight. ONE writer per session sends every frame
through a bounded outbox, with the send timeout of every WebSocket: a session that stops
reading is cut off, as any slow consumer is (session_outbox.py). Requests being answered are
bounded too: past `MAX_PENDING` the session stops reading until some are answered.

A frame without a usable id gets one error without an id, then close 1008; a store outage
while following, one error, then close 1013 (the client watches again with `after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from order_engine.api.auth import CLIENT
from order_engine.api.errors import ApiError
from order_engine.api.http import (
    NotCancellableError,
    OrderSubmitter,
    accepted_json,
    order_json,
    store_refusal,
)
from order_engine.api.order_parser import OrderParser
from order_engine.api.ratelimit import Limiter, client_key
from order_engine.api.session_follow import Following, follow_order, watched_history
from order_engine.api.session_frames import (
    Request,
    RequestError,
    Unanswerable,
    after_of,
    error_frame,
    internal_error,
    not_found,
    order_id_of,
    rate_limited,
    read_request,
    result_frame,
    session_error,
    submitted_order_of,
    too_many_orders,
)
from order_engine.api.session_outbox import LastWord, Outbox
from order_engine.api.sockets import CLOSE_TRY_AGAIN, Connections
from order_engine.api.ws import CLOSE_POLICY, OrderStreams
from order_engine.engine import Engine, NotCancellable, OrderNotFound
from order_engine.hub import Hub
from order_engine.store import Store, StoreConflict, StoreUnavailable
from order_engine.venues.tokens import REGISTRY, TokenRegistry

log = logging.getLogger("order_engine.session")
T = TypeVar("T")

MAX_FOLLOWED = 10_000  # orders one session follows at once; beyond, a submit or watch is 429
MAX_PENDING = 256  # requests one session works on at once; beyond, it stops reading
OUTBOX_FRAMES = 1024  # frames waiting for the writer; beyond, followers wait their turn


class SessionEndpoint:
    def __init__(
        self,
        *,
        store: Store,
        hub: Hub,
        engine: Engine,
        parser: OrderParser,
        submitter: OrderSubmitter,
        streams: OrderStreams,
        connections: Connections,
        send_timeout: float,
        limiter: Limiter | None = None,
        proxy_hops: int = 0,
        registry: TokenRegistry = REGISTRY,
    ) -> None:
        self.store = store
        self.hub = hub
        self.engine = engine
        self.parser = parser
        self.submitter = submitter
        self.send_timeout = send_timeout
        self.limiter = limiter
        self.proxy_hops = proxy_hops
        self.registry = registry
        self._streams = streams
        self._connections = connections
        self._uncut: set[asyncio.Task[Any]] = set()

    async def uncut(self, work: Coroutine[Any, Any, T]) -> T:
        """`work`'s result; run to its end even if the session ends meanwhile (an order
        stored is queued, a cancel recorded whole: the engine's steps are not made to be cut
        in the middle). The client that left may ask again: an Idempotency-Key replays."""
        task = asyncio.create_task(work)
        self._uncut.add(task)
        task.add_done_callback(_forget(self._uncut))
        return await asyncio.shield(task)

    async def session(self, request: web.Request) -> web.StreamResponse:
        """GET /api/session upgraded: requests in, replies and events out."""
        ws = await self._streams.open(request)
        try:
            await _Session(self, ws, request).run()
        finally:
            self._connections.discard(ws)
        return ws


class _Session:
    def __init__(
        self, endpoint: SessionEndpoint, ws: web.WebSocketResponse, request: web.Request
    ) -> None:
        self._e = endpoint
        self._ws = ws
        self._request = request
        self._client = request.get(CLIENT)
        self._bucket = client_key(request, endpoint.proxy_hops)
        self._outbox = Outbox(ws, request, send_timeout=endpoint.send_timeout, size=OUTBOX_FRAMES)
        self._pending = asyncio.Semaphore(MAX_PENDING)
        self._followed: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Tasks of requests not answered yet (each holds one of the `_pending` places).
        self._answering: set[asyncio.Task[None]] = set()
        self._all_answered = asyncio.Event()
        self._all_answered.set()
        self._fatal: asyncio.Future[LastWord] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read(), name="session-read")
        writer = self._outbox.writer
        closing: LastWord | None = None
        try:
            first: set[asyncio.Future[Any]] = {reader, writer, self._fatal}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if self._fatal.done():
                closing = self._fatal.result()
            elif reader.done():
                closing = self._read_outcome(reader)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if closing is not None:
                # The server ends the session: requests under way get their answer first.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._e.send_timeout):
                        await self._all_answered.wait()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # None: the client left (or the server is closing it): nobody to tell anything.
            await self._outbox.close(closing)

    @staticmethod
    def _read_outcome(reader: asyncio.Task[LastWord | None]) -> LastWord | None:
        if reader.cancelled():
            return None
        error = reader.exception()
        if error is None:
            return reader.result()
        log.error("trading session reader failed", exc_info=error)
        return _closing(WSCloseCode.INTERNAL_ERROR, internal_error())

    def _fail(self, closing: LastWord) -> None:
        if not self._fatal.done():
            self._fatal.set_result(closing)

    # -- reading ----------------------------------------------------------------------------

    async def _read(self) -> LastWord | None:
        """Until the client leaves (None) or sends a frame without a usable id."""
        async for msg in self._ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            request: Request | None = None
            refusal: ApiError | None = None
            try:
                request = read_request(msg.data)
                id_json = request.id_json
            except Unanswerable as exc:
                return _closing(CLOSE_POLICY, exc.error)
            except RequestError as exc:
                id_json, refusal = exc.id_json, exc.error
            # Every request counts against the client's bucket, as an HTTP request does.
            wait = await self._e.limiter.take(self._bucket) if self._e.limiter is not None else 0.0
            if wait > 0:
                refusal = rate_limited(wait)
            await self._pending.acquire()
            if refusal is not None:
                work = self._refuse(id_json, refusal)
            else:
                assert request is not None
                work = self._serve(request)
            task = asyncio.create_task(work, name="session-request")
            self._tasks.add(task)
            self._answering.add(task)
            self._all_answered.clear()
            task.add_done_callback(self._tasks.discard)
        return None

    def _answered(self) -> None:
        """The current request is answered: its place goes to the next one."""
        task = asyncio.current_task()
        if task in self._answering:
            self._answering.discard(task)
            self._pending.release()
            if not self._answering:
                self._all_answered.set()

    async def _refuse(self, id_json: str, error: ApiError) -> None:
        try:
            await self._outbox.push(error_frame(id_json, error))
        finally:
            self._answered()

    async def _serve(self, request: Request) -> None:
        """Answer the request by its id; then follow the order it took on, if any."""
        following = await self._answer(request)
        del request  # thousands of orders may be followed: nothing of what was asked is kept
        if following is None:
            return
        try:
            await follow_order(self._e.store, self._e.hub, following, self._outbox.push)
        except StoreUnavailable as exc:
            self._fail(_closing(CLOSE_TRY_AGAIN, store_refusal(exc)))
        except Exception as exc:
            log.error("[%s] trading session stream failed", following.order_id, exc_info=exc)
            self._fail(_closing(WSCloseCode.INTERNAL_ERROR, internal_error()))
        finally:
            await self._let_go(following)

    async def _answer(self, request: Request) -> Following | None:
        """The request's answer (a refusal too), by its id; the order it took on, if any."""
        try:
            if request.op == "submit":
                return await self._submit(request)
            if request.op == "cancel":
                await self._cancel(request)
                return None
            return await self._watch(request)
        except (ApiError, StoreUnavailable, StoreConflict) as exc:
            await self._outbox.push(error_frame(request.id_json, _refusal(exc)))
        except Exception as exc:
            log.error("trading session %s request failed", request.op, exc_info=exc)
            await self._outbox.push(error_frame(request.id_json, internal_error()))
        finally:
            self._answered()
        return None

    # -- the ops -----------------------------------------------------------------------------

    async def _submit(self, request: Request) -> Following | None:
        """The same order, the same checks and the same answer as POST /api/order/execute;
        then its events from seq 1 (an idempotent replay too: the client may be a new
        connection that never saw them)."""
        body, key = submitted_order_of(request)
        order_request = self._e.parser.parse(body, key, client_id=self._client)
        if len(self._followed) >= MAX_FOLLOWED:
            raise too_many_orders(MAX_FOLLOWED)
        order, created = await self._e.uncut(self._e.submitter.submit(order_request))
        message = (
            "Order submitted successfully."
            if created
            else "Order already submitted with this Idempotency-Key."
        )
        await self._outbox.push(result_frame(request.id_json, accepted_json(order, message)))
        if order.order_id in self._followed:  # replayed on the session that follows it
            return None
        return await self._take_on(order.order_id, 0)

    async def _cancel(self, request: Request) -> None:
        order_id = order_id_of(request)
        try:
            order = await self._e.uncut(self._e.engine.cancel(order_id, client_id=self._client))
        except OrderNotFound:
            raise not_found(order_id) from None
        except NotCancellable as exc:
            raise NotCancellableError(exc.order) from None
        await self._outbox.push(result_frame(request.id_json, order_json(order, self._e.registry)))

    async def _watch(self, request: Request) -> Following | None:
        """As the status stream: subscribed first, then the store after `after`; another
        client's order is unknown (ids cannot be probed)."""
        order_id = order_id_of(request)
        after = after_of(request)
        if order_id in self._followed:
            raise ApiError(
                409, "already_watching", f"this session follows order {order_id} already", "orderId"
            )
        if len(self._followed) >= MAX_FOLLOWED:
            raise too_many_orders(MAX_FOLLOWED)
        following = await self._take_on(order_id, after)
        try:
            history = await watched_history(
                self._e.store, self._e.hub, order_id, after, self._client
            )
            watching = {"orderId": order_id, "after": after}
            await self._outbox.push(result_frame(request.id_json, watching))
        except BaseException:
            await self._let_go(following)
            raise
        if history is None:  # it ended at `after`: nothing more will come
            await self._let_go(following)
            return None
        following.history = history
        return following

    async def _take_on(self, order_id: str, after: int) -> Following:
        """Follow the order (subscribed from now) until `_let_go`."""
        self._followed.add(order_id)
        try:
            return await Following.start(self._e.hub, order_id, after)
        except BaseException:
            self._followed.discard(order_id)
            raise

    async def _let_go(self, following: Following) -> None:
        self._followed.discard(following.order_id)
        await following.stop()


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the answer went to a session that ended

    return done


def _closing(code: int, error: ApiError) -> LastWord:
    """The session ends: the error (without an id: no request's), then close with `code`."""
    return LastWord(code, error.code.encode(), error_frame(None, error))


def _refusal(exc: ApiError | StoreUnavailable | StoreConflict) -> ApiError:
    if isinstance(exc, ApiError):
        return session_error(exc)
    return store_refusal(exc)

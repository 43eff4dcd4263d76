"""REST handlers: submit an order, read or cancel one, stats, health and readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from order_engine.api.auth import CLIENT
from order_engine.api.errors import ApiError, error_response, json_response
from order_engine.api.history import encode_cursor, parse_history_query
from order_engine.api.order_parser import OrderParser
from order_engine.api.validation import check_request_text, parse_json, parse_order_id
from order_engine.engine import (
    Engine,
    EngineUnavailable,
    NotCancellable,
    OrderNotFound,
    OrderRequest,
)
from order_engine.hub import Hub
from order_engine.orders import Order, OrderType, Status
from order_engine.store import DuplicateOrder, Store, StoreConflict, StoreUnavailable
from order_engine.venues.tokens import TokenRegistry

log = logging.getLogger("order_engine.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The order types that wait armed for a trigger (GET /api/stats counts them).
_ARMED_TYPES = (OrderType.LIMIT, OrderType.SNIPER)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal is JSON `{"error": {...}}`; nothing a client sends becomes a 500."""
    try:
        websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        check_request_text(request.query, request.headers, websocket=websocket)
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(ApiError(exc.status, code, exc.reason, headers=headers))
    except (StoreUnavailable, StoreConflict) as exc:
        return error_response(store_refusal(exc))


def store_refusal(exc: StoreUnavailable | StoreConflict) -> ApiError:
    """What a client is told when the store could not take its request."""
    if isinstance(exc, StoreConflict):
        # The store is up and refused a write the handler did not expect to clash (a key
        # freed and taken again meanwhile): the client may retry, but it is no outage.
        log.warning("store conflict: %s", exc)
        return ApiError(409, "conflict", "the request conflicted with a concurrent change, retry")
    log.warning("store unavailable: %s", exc)
    return ApiError(
        503,
        "store_unavailable",
        "storage is unavailable, retry shortly",
        headers={"Retry-After": "2"},
    )


def status_stream_path(order_id: str) -> str:
    """Where an order's events are streamed (WebSocket), as the 201 answer points to it."""
    return f"/api/order/status?orderId={order_id}"


def accepted_json(order: Order, message: str) -> dict[str, Any]:
    """The answer to a submitted order (POST, and the execute WebSocket's first reply)."""
    return {
        "orderId": order.order_id,
        "status": order.status.value,
        "message": message,
        "websocketUrl": status_stream_path(order.order_id),
    }


def order_json(order: Order, registry: TokenRegistry) -> dict[str, Any]:
    # A stored order may name a token not tradable (yet): a sniper's target.
    token_in = registry.resolve(order.token_in, upcoming=True)
    token_out = registry.resolve(order.token_out, upcoming=True)

    def out(amount: int | None) -> str | None:
        return None if amount is None else token_out.format(amount)

    liquidity = order.min_liquidity

    return {
        "orderId": order.order_id,
        "tokenIn": order.token_in,
        "tokenOut": order.token_out,
        "amount": token_in.format(order.amount),
        "slippageBps": order.slippage_bps,
        "status": order.status.value,
        "attempts": order.attempts,
        "dex": order.dex,
        "txHash": order.tx_hash,
        "executedPrice": order.executed_price,
        "amountOut": out(order.amount_out),
        "minAmountOut": out(order.min_amount_out),
        "error": (
            {"code": order.error_code, "message": order.error_message or ""}
            if order.error_code
            else None
        ),
        "clientOrderId": order.client_order_id,
        "createdAt": order.created_at,
        "updatedAt": order.updated_at,
        "orderType": order.order_type.value,
        "limitPrice": order.limit_price,
        "expiresAt": order.expires_at,
        "minLiquidity": None if liquidity is None else token_in.format(liquidity),
    }


class OrderSubmitter:
    """Turns a validated request into a stored, queued order, honouring Idempotency-Key:
    same key and body -> the original order (replayed); different body -> 422; the same key
    while its first request is still being stored -> 409."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        *,
        idempotency_ttl_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._store = store
        self._ttl = idempotency_ttl_s
        self._clock = clock
        self._answering: set[str] = set()

    async def submit(self, request: OrderRequest) -> tuple[Order, bool]:
        """Returns (order, created): created is False for an idempotent replay."""
        key = request.idempotency_key
        if key is None:
            return await self._create(request), True
        if key in self._answering:
            raise ApiError(
                409,
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still in progress",
                "Idempotency-Key",
            )
        self._answering.add(key)
        try:
            existing = await self._store.by_idempotency_key(key)
            if existing is not None and existing.created_at < self._clock() - self._ttl:
                # Expired: the key is free for a new order.
                await self._store.forget_idempotency_key(key)
                existing = None
            if existing is None:
                try:
                    return await self._create(request), True
                except DuplicateOrder as exc:  # another replica stored it first
                    existing = exc.existing
                    if existing.idempotency_key != key:
                        raise _duplicate_client_order_id() from None
            if existing.request_hash != request.request_hash:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                    "Idempotency-Key",
                )
            return existing, False
        finally:
            self._answering.discard(key)

    async def _create(self, request: OrderRequest) -> Order:
        try:
            return await self._engine.submit(request)
        except DuplicateOrder:
            if request.idempotency_key is None:
                raise _duplicate_client_order_id() from None
            raise
        except EngineUnavailable as exc:
            raise ApiError(
                503, exc.code, exc.message, headers={"Retry-After": str(int(exc.retry_after))}
            ) from None


class NotCancellableError(ApiError):
    """409 for an order whose execution began: the body says which status it is in, so the
    client knows what to wait for without another request."""

    def __init__(self, order: Order) -> None:
        super().__init__(
            409,
            "not_cancellable",
            f"order {order.order_id} is {order.status.value}: only a pending or open order "
            "can be cancelled",
            "orderId",
        )
        self.order_status = order.status

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["status"] = self.order_status.value
        return body


def _order_not_found(order_id: str) -> ApiError:
    return ApiError(404, "order_not_found", f"no order {order_id}", "orderId")


def _duplicate_client_order_id() -> ApiError:
    return ApiError(
        409,
        "duplicate_client_order_id",
        "an order with this clientOrderId exists already",
        "clientOrderId",
    )


class RestHandlers:
    def __init__(
        self,
        *,
        submitter: OrderSubmitter,
        engine: Engine,
        store: Store,
        hub: Hub,
        parser: OrderParser,
        registry: TokenRegistry,
        max_body_bytes: int,
        body_timeout_s: float = 10.0,
    ) -> None:
        self._body_timeout = body_timeout_s
        self._submitter = submitter
        self._engine = engine
        self._store = store
        self._hub = hub
        self._parser = parser
        self._registry = registry
        self._max_body = max_body_bytes

    async def execute(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
        if request.content_length is not None and request.content_length > self._max_body:
            raise ApiError(413, "body_too_large", f"body exceeds {self._max_body} bytes")
        if request.content.is_eof():
            # The whole body came with the headers (an order is small): nothing to wait
            # for, so no timer to set.
            raw = request.content.read_nowait()
            if len(raw) > self._max_body:
                raise ApiError(413, "body_too_large", f"body exceeds {self._max_body} bytes")
        else:
            try:
                async with asyncio.timeout(self._body_timeout):
                    raw = await self._read_body(request)
            except TimeoutError:
                raise ApiError(
                    408, "request_timeout", "the request body did not arrive in time"
                ) from None
        order_request = self._parser.parse(
            parse_json(raw), request.headers.get("Idempotency-Key"), client_id=request.get(CLIENT)
        )
        order, created = await self._submitter.submit(order_request)
        if created:
            return json_response(accepted_json(order, "Order submitted successfully."), 201)
        body = accepted_json(order, "Order already submitted with this Idempotency-Key.")
        return json_response(body, status=200, headers={"Idempotent-Replayed": "true"})

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body (it may arrive in many pieces), refused past the size limit."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(self._max_body + 1 - size):
            size += len(chunk)
            if size > self._max_body:
                raise ApiError(413, "body_too_large", f"body exceeds {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def list_orders(self, request: web.Request) -> web.Response:
        """GET /api/orders: the history, newest first, in cursor pages."""
        query = parse_history_query(request.query, self._registry, request.get(CLIENT))
        orders = await self._store.find(query)
        full = len(orders) == query.limit
        return json_response(
            {
                "orders": [order_json(o, self._registry) for o in orders],
                "nextCursor": encode_cursor(orders[-1]) if full else None,
            }
        )

    async def get_order(self, request: web.Request) -> web.Response:
        order_id = parse_order_id(request.match_info.get("order_id"))
        order = await self._store.get(order_id)
        client = request.get(CLIENT)
        # Another client's order answers exactly as a missing one: ids cannot be probed.
        if order is None or (client is not None and order.client_id != client):
            raise _order_not_found(order_id)
        events = await self._store.events(order_id)
        return json_response(
            {
                "order": order_json(order, self._registry),
                "events": [e.to_message() for e in events],
            }
        )

    async def cancel_order(self, request: web.Request) -> web.Response:
        """DELETE /api/order/{id}: cancel a pending or open order; 409 once it executes."""
        order_id = parse_order_id(request.match_info.get("order_id"))
        try:
            order = await self._engine.cancel(order_id, client_id=request.get(CLIENT))
        except OrderNotFound:
            raise _order_not_found(order_id) from None
        except NotCancellable as exc:
            raise NotCancellableError(exc.order) from None
        return json_response(order_json(order, self._registry))

    async def stats(self, request: web.Request) -> web.Response:
        """GET /api/stats: this process's queue and armed orders, and the store's counts of
        every order by status (all clients')."""
        counts = await self._store.count_by_status()
        engine = self._engine
        armed = engine.open_orders()
        return json_response(
            {
                "queueDepth": engine.queue_depth,
                "inFlight": engine.transactions_in_flight,
                "held": engine.held,
                "openOrders": {t.value: armed.get(t.value, 0) for t in _ARMED_TYPES},
                "byStatus": {s.value: counts.get(s.value, 0) for s in Status},
            }
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        checks = {"store": "ok", "hub": "ok"}
        try:
            await self._store.ping()
        except StoreUnavailable as exc:
            checks["store"] = str(exc)
        try:
            await self._hub.ping()
        except Exception as exc:  # any broker failure means "not ready", never a 500
            checks["hub"] = f"unavailable: {exc}"
        ready = all(v == "ok" for v in checks.values())
        return json_response(
            {"status": "ready" if ready else "unavailable", **checks}, status=200 if ready else 503
        )

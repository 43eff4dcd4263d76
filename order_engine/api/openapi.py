"""The OpenAPI 3.1 document: every endpoint and every message, checked against real responses
by the tests (its schemas are JSON Schema 2020-12)."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from order_engine import __version__, payloads
from order_engine.api.tokens import TOKEN_LIST_SCHEMA, TOKENS_PATH
from order_engine.orders import OrderType, Status

_DECIMAL = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["1.5"]}
_DEX = {"type": "string", "enum": ["Raydium", "Meteora"]}
_STATUS = {"type": "string", "enum": [status.value for status in Status]}
_ERROR_BODY = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
        "status": {**_STATUS, "description": "not_cancellable: the order's current status"},
        "retryAfter": {
            "type": "integer",
            "minimum": 1,
            "description": "trading session: seconds to wait before asking again, where HTTP "
            "would send Retry-After (rate_limited, too_many_orders, queue full, ...)",
        },
    },
    "additionalProperties": False,
}
_ORDER_ID_PATH = {
    "name": "orderId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}


_TIME_VALUE = {
    "oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "format": "date-time"}]
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _event(status: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["orderId", "seq", "status", "message", "ts", "data"],
        "properties": {
            "orderId": {"type": "string", "format": "uuid"},
            "seq": {"type": "integer", "minimum": 1},
            "status": {"const": status},
            "message": {"type": "string"},
            "ts": {"type": "number", "description": "unix seconds"},
            "data": data,
        },
        "additionalProperties": False,
    }


def _obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


_REF_TEMPLATE = "#/components/schemas/{name}"


def _event_schemas() -> dict[str, Any]:
    """One schema per status's event, its data generated from the payload types."""
    data_refs, data_schemas = payloads.schemas(_REF_TEMPLATE)
    events = {_event_name(status): _event(status.value, ref) for status, ref in data_refs.items()}
    return {**data_schemas, **events}


def _event_name(status: Status) -> str:
    return f"{status.value.capitalize()}Event"


_EVENT_SCHEMAS = _event_schemas()
_EVENT_NAMES = [_event_name(status) for status in Status]

_SESSION_ID = {
    "type": ["string", "number", "boolean", "null"],
    "description": "the client's, any JSON scalar: echoed exactly in the reply",
}
_SESSION_ORDER_ID = {"type": "string", "format": "uuid"}


def _session_request(op: str, required: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    return _obj(["id", "op", *required], {"id": _SESSION_ID, "op": {"const": op}, **fields})


# The trading session's messages (GET /api/session).
_SESSION_SCHEMAS: dict[str, Any] = {
    "SessionRequest": {
        "oneOf": [_ref("SessionSubmit"), _ref("SessionCancel"), _ref("SessionWatch")],
        "description": "One JSON text frame. A field an op does not take is unknown_field.",
    },
    "SessionSubmit": _session_request(
        "submit",
        ["order"],
        {
            "order": _ref("OrderRequest"),
            "idempotencyKey": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "description": "as the Idempotency-Key header of POST /api/order/execute "
                "(the same keys: a key used over HTTP replays here too)",
            },
        },
    ),
    "SessionCancel": _session_request("cancel", ["orderId"], {"orderId": _SESSION_ORDER_ID}),
    "SessionWatch": _session_request(
        "watch",
        ["orderId"],
        {
            "orderId": _SESSION_ORDER_ID,
            "after": {
                "type": "integer",
                "minimum": 0,
                "default": 0,
                "description": "resume: only events with a greater seq",
            },
        },
    ),
    "SessionMessage": {
        "oneOf": [
            _ref("SessionResult"),
            _ref("SessionRefusal"),
            _ref("SessionEvent"),
            _ref("Error"),
        ],
        "description": "A reply by id (result or error), an event of a followed order, or "
        "the session's last word before the server closes it (an Error without id).",
    },
    "SessionResult": _obj(
        ["id", "result"],
        {
            "id": _SESSION_ID,
            "result": {
                "oneOf": [_ref("OrderAccepted"), _ref("Order"), _ref("SessionWatching")],
                "description": "submit: as POST /api/order/execute answers (201 or, replayed "
                "by its idempotencyKey, 200); cancel: the order as DELETE answers it; watch: "
                "what is followed",
            },
        },
    ),
    "SessionWatching": _obj(
        ["orderId", "after"],
        {"orderId": _SESSION_ORDER_ID, "after": {"type": "integer", "minimum": 0}},
    ),
    "SessionRefusal": _obj(["id", "error"], {"id": _SESSION_ID, "error": _ERROR_BODY}),
    "SessionEvent": _obj(
        ["event"],
        {"event": {**_ref("OrderEvent"), "description": "as /api/order/status sends it"}},
    ),
}

_SCHEMAS: dict[str, Any] = {
    "OrderRequest": {
        **_obj(
            ["tokenIn", "tokenOut", "amount"],
            {
                "tokenIn": {"type": "string", "description": "symbol (case-insensitive) or mint"},
                "tokenOut": {"type": "string"},
                "amount": {
                    "description": "in units of tokenIn, > 0, at most the token's decimals",
                    "oneOf": [{"type": "number", "exclusiveMinimum": 0}, _DECIMAL],
                },
                "slippageBps": {"type": "integer", "minimum": 0, "maximum": 5000, "default": 50},
                "clientOrderId": {"type": "string", "minLength": 1, "maxLength": 64},
                "orderType": {
                    "type": "string",
                    "enum": [t.value for t in OrderType],
                    "default": "market",
                    "description": "market: executes now; limit: waits until the best route "
                    "pays at least limitPrice; sniper: waits for tokenOut's first pool. Any "
                    "other value is 400 invalid_order_type",
                },
                "limitPrice": {
                    "description": "least tokenOut per one tokenIn, exact: > 0, at most 30 "
                    "significant digits and 30 digits either side of the point "
                    "(400 invalid_limit_price). Required for limit, optional for sniper",
                    "oneOf": [{"type": "number", "exclusiveMinimum": 0}, _DECIMAL],
                },
                "expiresIn": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "limit and sniper: seconds from now, at most "
                    "orders.max_expiry_s (7 days by default); without it nor expiresAt, "
                    "orders.default_expiry_s (400 invalid_expiry)",
                },
                "expiresAt": {
                    **_TIME_VALUE,
                    "description": "limit and sniper, instead of expiresIn: epoch seconds or "
                    "ISO 8601 with a timezone, in the future and at most orders.max_expiry_s "
                    "away (400 invalid_expiry; both given: invalid_expiry naming the second)",
                },
                "minLiquidity": {
                    "description": "sniper: the least depth of the new pool, in units of "
                    "tokenIn, at most its decimals (400 invalid_min_liquidity)",
                    "oneOf": [{"type": "number", "exclusiveMinimum": 0}, _DECIMAL],
                },
            },
        ),
        "description": "A field of another order type (limitPrice on a market order, "
        "minLiquidity on a limit order) is 400 field_not_allowed naming it; unknown fields "
        "are 400 unknown_field, its message naming every one.",
    },
    "OrderAccepted": _obj(
        ["orderId", "status", "message", "websocketUrl"],
        {
            "orderId": {"type": "string", "format": "uuid"},
            "status": _STATUS,
            "message": {"type": "string"},
            "websocketUrl": {
                "type": "string",
                "description": "path of the order's status stream (WebSocket)",
                "examples": ["/api/order/status?orderId=cfe19bbb-ed76-4082-929d-3574876c98ff"],
            },
        },
    ),
    "Error": _obj(["error"], {"error": _ERROR_BODY}),
    "Order": _obj(
        [
            "orderId",
            "tokenIn",
            "tokenOut",
            "amount",
            "slippageBps",
            "status",
            "attempts",
            "dex",
            "txHash",
            "executedPrice",
            "amountOut",
            "minAmountOut",
            "error",
            "clientOrderId",
            "createdAt",
            "updatedAt",
            "orderType",
            "limitPrice",
            "expiresAt",
            "minLiquidity",
        ],
        {
            "orderId": {"type": "string", "format": "uuid"},
            "tokenIn": {"type": "string"},
            "tokenOut": {"type": "string"},
            "amount": _DECIMAL,
            "slippageBps": {"type": "integer"},
            "status": _STATUS,
            "attempts": {"type": "integer", "minimum": 0},
            "dex": {"oneOf": [_DEX, {"type": "null"}]},
            "txHash": {"type": ["string", "null"]},
            "executedPrice": {"type": ["number", "null"]},
            "amountOut": {"oneOf": [_DECIMAL, {"type": "null"}]},
            "minAmountOut": {"oneOf": [_DECIMAL, {"type": "null"}]},
            "error": {"oneOf": [_ERROR_BODY, {"type": "null"}]},
            "clientOrderId": {"type": ["string", "null"]},
            "createdAt": {"type": "number"},
            "updatedAt": {"type": "number"},
            "orderType": {"type": "string", "enum": [t.value for t in OrderType]},
            "limitPrice": {"oneOf": [_DECIMAL, {"type": "null"}]},
            "expiresAt": {"type": ["number", "null"], "description": "epoch seconds"},
            "minLiquidity": {
                "oneOf": [_DECIMAL, {"type": "null"}],
                "description": "sniper: in units of tokenIn",
            },
        },
    ),
    "Stats": _obj(
        ["queueDepth", "inFlight", "held", "openOrders", "byStatus"],
        {
            "queueDepth": {"type": "integer", "minimum": 0, "description": "orders queued"},
            "inFlight": {
                "type": "integer",
                "minimum": 0,
                "description": "transactions sent whose fate the chain has not told yet",
            },
            "held": {
                "type": "integer",
                "minimum": 0,
                "description": "orders this process holds: queued, worked on, confirming",
            },
            "openOrders": _obj(
                ["limit", "sniper"],
                {
                    "limit": {"type": "integer", "minimum": 0},
                    "sniper": {"type": "integer", "minimum": 0},
                },
            ),
            "byStatus": _obj(
                [status.value for status in Status],
                {status.value: {"type": "integer", "minimum": 0} for status in Status},
            ),
        },
    ),
    "OrderPage": _obj(
        ["orders", "nextCursor"],
        {
            "orders": {"type": "array", "items": _ref("Order")},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "pass as `cursor` for the next (older) page; null on the last",
            },
        },
    ),
    "StreamWarning": _obj(
        ["warning"],
        {
            "warning": _obj(
                ["code", "message"], {"code": {"const": "lagged"}, "message": {"type": "string"}}
            )
        },
    ),
    "OrderDetail": _obj(
        ["order", "events"],
        {"order": _ref("Order"), "events": {"type": "array", "items": _ref("OrderEvent")}},
    ),
    "OrderEvent": {"oneOf": [_ref(name) for name in _EVENT_NAMES]},
    **_EVENT_SCHEMAS,
    "VenuePrice": _obj(
        ["dex", "price", "slot", "ts"],
        {
            "dex": _DEX,
            "price": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "quote token per base token for the pair's amountIn, fees "
                "included, as the venue would fill it",
            },
            "slot": {"type": "integer", "minimum": 0, "description": "when the price was seen"},
            "ts": {"type": "number", "description": "unix seconds, when the price was seen"},
        },
    ),
    "PairPrices": _obj(
        ["pair", "tokenIn", "tokenOut", "base", "quote", "amountIn", "prices"],
        {
            "pair": {"type": "string", "examples": ["SOL→USDC"]},
            "tokenIn": {"type": "string"},
            "tokenOut": {"type": "string"},
            "base": {"type": "string", "description": "the token priced"},
            "quote": {"type": "string", "description": "the token it is priced in"},
            "amountIn": {**_DECIMAL, "description": "the reference trade, in tokenIn"},
            "prices": {"type": "array", "items": _ref("VenuePrice")},
        },
    ),
    "MarketPrices": _obj(
        ["slot", "ts", "pairs"],
        {
            "slot": {"type": "integer", "minimum": 0, "description": "the streamed view's slot"},
            "ts": {"type": "number", "description": "unix seconds"},
            "pairs": {"type": "array", "items": _ref("PairPrices")},
        },
    ),
    **_SESSION_SCHEMAS,
    "TokenList": TOKEN_LIST_SCHEMA,
    "Health": _obj(
        ["status"],
        {"status": {"type": "string"}, "store": {"type": "string"}, "hub": {"type": "string"}},
    ),
}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_TIME = _TIME_VALUE
_UUID = {"type": "string", "format": "uuid"}
_SEQ = {"type": "integer", "minimum": 0}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid input (field-level code; `invalid_text`: NUL or text that is not UTF-8); "
        "on a WebSocket path, not an Upgrade request, or an API key that is not UTF-8 text",
        401: "an API key is required (when authentication is on)",
        404: "no such order (or another client's)",
        408: "the request body did not arrive in time",
        409: "the same Idempotency-Key is still in progress, or clientOrderId is taken",
        413: "body too large",
        415: "Content-Type is not application/json",
        422: "Idempotency-Key reused with a different body",
        429: "rate limit or WebSocket cap reached (see Retry-After)",
        503: "queue full, shutting down or storage unavailable (see Retry-After)",
    }
    return {str(c): _json("Error", text[c]) for c in codes}


_SUBMIT = {
    "summary": "Submit a swap order: market, limit or sniper",
    "operationId": "executeOrder",
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _ref("OrderRequest")}},
    },
    "responses": {
        "201": _json("OrderAccepted", "stored and queued (limit, sniper: then armed)"),
        "200": _json("OrderAccepted", "replay of an earlier request with the same key"),
        **_errors(400, 401, 408, 409, 413, 415, 422, 429, 503),
    },
}

_GET_ORDER = {
    "summary": "An order and all its events",
    "operationId": "getOrder",
    "parameters": [_ORDER_ID_PATH],
    "responses": {
        "200": _json("OrderDetail", "the order"),
        **_errors(400, 401, 404, 429, 503),
    },
}

_CANCEL_ORDER = {
    "summary": "Cancel a pending or open order",
    "operationId": "cancelOrder",
    "description": "Cancels an order that is pending or open (armed): its stream ends with "
    "a `cancelled` event. Once its execution began (routing and after) or it finished, the "
    "answer is 409 `not_cancellable` with the order's status in `error.status`.",
    "parameters": [_ORDER_ID_PATH],
    "responses": {
        "200": _json("Order", "cancelled: the order, status `cancelled`"),
        "409": _json("Error", "not_cancellable: too late, `error.status` is the order's status"),
        **_errors(400, 401, 404, 429, 503),
    },
}

_WS_NOTE = (
    "WebSocket upgrade. Messages are OrderEvent objects in seq order (history, then live); "
    "the server closes with 1000 after the terminal event. A malformed request gets one "
    "Error message then close 1008; an unknown order, Error then 4404."
)

_PATHS: dict[str, Any] = {
    "/api/order/execute": {"post": _SUBMIT},
    "/api/orders/execute": {
        "post": {**_SUBMIT, "operationId": "executeOrderAlias"},
        "get": {
            "summary": "Submit an order over a WebSocket and stream it on the same connection",
            "operationId": "executeOrderWebSocket",
            "description": "WebSocket upgrade. The client's first message is an OrderRequest; "
            "the server answers OrderAccepted (or Error then close 1008), then streams the "
            "order's OrderEvent messages and closes with 1000 after the terminal one. With "
            "`orderId` (and optionally `after`) in the query, it serves that order's status "
            "stream instead, exactly as /api/order/status does (to reconnect where one "
            "submitted).",
            "parameters": [
                _query("orderId", "stream this order instead of taking one", _UUID),
                _query("after", "with orderId: only events with a greater seq", _SEQ),
            ],
            "x-websocket": {
                "send": _ref("OrderRequest"),
                "receive": {"oneOf": [_ref("OrderAccepted"), _ref("OrderEvent"), _ref("Error")]},
            },
            "responses": {
                "101": {"description": "switching to WebSocket"},
                **_errors(400, 401, 429),
            },
        },
    },
    "/api/order/status": {
        "get": {
            "summary": "Stream an order's events",
            "operationId": "orderStatusWebSocket",
            "description": _WS_NOTE,
            "parameters": [
                {"name": "orderId", "in": "query", "required": True, "schema": _UUID},
                _query("after", "resume: only events with a greater seq", _SEQ),
            ],
            "x-websocket": {"receive": {"oneOf": [_ref("OrderEvent"), _ref("Error")]}},
            "responses": {
                "101": {"description": "switching to WebSocket"},
                **_errors(400, 401, 429),
            },
        }
    },
    "/api/order/{orderId}": {"get": _GET_ORDER, "delete": _CANCEL_ORDER},
    "/api/orders/{orderId}": {
        "get": {**_GET_ORDER, "operationId": "getOrderAlias"},
        "delete": {**_CANCEL_ORDER, "operationId": "cancelOrderAlias"},
    },
    "/api/tokens": TOKENS_PATH,
    "/api/stats": {
        "get": {
            "summary": "Queue, in-flight and open orders; every order counted by status",
            "operationId": "stats",
            "description": "queueDepth, inFlight, held and openOrders are this process's "
            "(armed limit and sniper orders by type); byStatus counts every order in the "
            "store, every status present (0 if none). With authentication on, the stats are "
            "still global: every client's orders, not only the caller's.",
            "responses": {
                "200": _json("Stats", "the stats"),
                **_errors(401, 429, 503),
            },
        }
    },
    "/api/orders": {
        "get": {
            "summary": "Order history: filters, newest first, cursor pages",
            "operationId": "listOrders",
            "description": "Pages stay stable while new orders arrive (keyset on creation "
            "time and id). With authentication on, only the caller's orders.",
            "parameters": [
                _query("status", "one or more statuses, comma-separated", {"type": "string"}),
                _query("tokenIn", "symbol or mint", {"type": "string"}),
                _query("tokenOut", "symbol or mint", {"type": "string"}),
                _query("from", "created at or after: epoch seconds or ISO 8601", _TIME),
                _query("to", "created before: epoch seconds or ISO 8601", _TIME),
                _query(
                    "limit",
                    "page size (default 50)",
                    {"type": "integer", "minimum": 1, "maximum": 500},
                ),
                _query("cursor", "nextCursor of the previous page", {"type": "string"}),
            ],
            "responses": {
                "200": _json("OrderPage", "a page of orders"),
                **_errors(400, 401, 429),
            },
        }
    },
    "/api/orders/stream": {
        "get": {
            "summary": "Firehose: every event of every order, live",
            "operationId": "ordersStreamWebSocket",
            "description": "WebSocket upgrade. OrderEvent messages of all orders as they "
            "happen (optionally filtered); a client too slow for the stream gets a "
            "StreamWarning (`lagged`) for what was dropped, one that stops reading is "
            "disconnected. Invalid filters: one Error message, then close 1008.",
            "parameters": [
                _query("status", "only these statuses, comma-separated", {"type": "string"}),
                _query("tokenIn", "only orders selling this token", {"type": "string"}),
                _query("tokenOut", "only orders buying this token", {"type": "string"}),
            ],
            "x-websocket": {
                "receive": {"oneOf": [_ref("OrderEvent"), _ref("StreamWarning"), _ref("Error")]}
            },
            "responses": {
                "101": {"description": "switching to WebSocket"},
                **_errors(400, 401, 429),
            },
        }
    },
    "/api/session": {
        "get": {
            "summary": "Trading session: submit, cancel and watch many orders on one WebSocket",
            "operationId": "tradingSessionWebSocket",
            "description": "WebSocket upgrade, for bots. Each frame sent is a SessionRequest "
            "`{id, op, ...}`: `submit` (the same order and idempotencyKey rules as POST "
            "/api/order/execute), `cancel` (as DELETE /api/order/{orderId}), `watch` (as "
            "/api/order/status, `after` to resume). Each is answered by its id, in the order "
            "they finish, with `{id, result}` or `{id, error}`: the same error codes as HTTP, "
            "plus already_watching (409: the session follows that order already) and "
            "too_many_orders (429: it follows 10,000). Every order submitted or watched on the "
            "session is followed: its events come as `{event}`, exactly the status stream's "
            "messages, in seq order with no gap and no duplicate (from seq 1 for a submit, a "
            "replay too unless the session follows that order already; after `after` for a "
            "watch) until the terminal one. The answer to a submit or a "
            "watch comes before the order's events; the answer to a cancel and the `cancelled` "
            "event may come in either order. Every request counts against the client's rate "
            "limit as an HTTP request does (error rate_limited with retryAfter); another "
            "client's order is order_not_found. A frame without a usable id (not JSON, not an "
            "object, no id, an id that is not a scalar): one Error without id, then close "
            "1008. A storage outage while following: one Error (store_unavailable), then close "
            "1013: connect again and watch with `after`. A client that stops reading is "
            "disconnected.",
            "x-websocket": {"send": _ref("SessionRequest"), "receive": _ref("SessionMessage")},
            "responses": {
                "101": {"description": "switching to WebSocket"},
                **_errors(400, 401, 429),
            },
        }
    },
    "/api/market": {
        "get": {
            "summary": "Each venue's current price of every pair, from the streamed pools",
            "operationId": "marketPrices",
            "description": "Both directions of every pair a venue has a pool for (named as "
            "orders name them: SOL, not wSOL), each venue's price for a small reference trade "
            "(`amountIn`, the same on every venue). The first message of /api/market/stream.",
            "responses": {
                "200": _json("MarketPrices", "the current prices"),
                "503": _json(
                    "Error",
                    "market data is off (`market_data_off`) or the streamed pools are behind "
                    "the chain (`market_data_stale`)",
                ),
                **_errors(401, 429),
            },
        }
    },
    "/api/market/stream": {
        "get": {
            "summary": "Live venue prices: every pair, then the pairs that change",
            "operationId": "marketStreamWebSocket",
            "description": "WebSocket upgrade. The first MarketPrices message has every pair "
            "(as GET /api/market); each later one only the pairs whose price changed since "
            "the last, at most four a second (changes in between are coalesced). A client "
            "that stops reading is disconnected. With market data off or behind the chain: "
            "one Error message (`market_data_off`, `market_data_stale`), then close 1013.",
            "x-websocket": {"receive": {"oneOf": [_ref("MarketPrices"), _ref("Error")]}},
            "responses": {
                "101": {"description": "switching to WebSocket"},
                **_errors(400, 401, 429),
            },
        }
    },
    "/": {
        "get": {
            "summary": "The live dashboard (HTML); its assets are under /static/",
            "operationId": "dashboard",
            "security": [],
            "responses": {
                "200": {"description": "the page", "content": {"text/html": {"schema": {}}}}
            },
        }
    },
    "/static/{name}": {
        "get": {
            "summary": "A dashboard asset (script, style sheet)",
            "operationId": "dashboardAsset",
            "security": [],
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {"description": "the asset"},
                **_errors(404),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (text exposition format)",
            "operationId": "metrics",
            "responses": {
                "200": {"description": "metrics", "content": {"text/plain": {"schema": {}}}},
                **_errors(401, 429),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness: the process answers",
            "operationId": "healthz",
            "security": [],
            "responses": {"200": _json("Health", "alive")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: the store answers",
            "operationId": "readyz",
            "security": [],
            "responses": {
                "200": _json("Health", "ready"),
                "503": _json("Health", "not ready"),
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_errors(401, 429),
            },
        }
    },
}


@cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "order_engine",
            "version": __version__,
            "description": "Best-execution routing of swap orders across Raydium and Meteora "
            "(simulated), with every stage streamed over WebSockets.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": _PATHS,
        # Authentication is optional (config [auth]): with it on, every path but the health
        # checks needs the key; WebSockets may pass it as the `apiKey` query parameter.
        "security": [{"ApiKey": []}, {}],
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
    }


def openapi_document() -> dict[str, Any]:
    return copy.deepcopy(_document())

"""The OpenAPI document's component schemas: orders and their requests, every status's
event (generated from the payload types), stats, history pages, market prices, health, and
those defined beside their endpoints (the trading session's messages, the token list)."""

from __future__ import annotations

from typing import Any

from order_engine import payloads
from order_engine.api.openapi_common import DECIMAL, DEX, ERROR_BODY, STATUS, TIME_VALUE, obj, ref
from order_engine.api.openapi_session import SESSION_SCHEMAS
from order_engine.api.tokens import TOKEN_LIST_SCHEMA
from order_engine.orders import OrderType, Status


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


_REF_TEMPLATE = "#/components/schemas/{name}"


def _event_schemas() -> dict[str, Any]:
    """One schema per status's event, its data generated from the payload types."""
    data_refs, data_schemas = payloads.schemas(_REF_TEMPLATE)
    events = {
        _event_name(status): _event(status.value, data_ref)
        for status, data_ref in data_refs.items()
    }
    return {**data_schemas, **events}


def _event_name(status: Status) -> str:
    return f"{status.value.capitalize()}Event"


_EVENT_SCHEMAS = _event_schemas()
_EVENT_NAMES = [_event_name(status) for status in Status]

SCHEMAS: dict[str, Any] = {
    "OrderRequest": {
        **obj(
            ["tokenIn", "tokenOut", "amount"],
            {
                "tokenIn": {"type": "string", "description": "symbol (case-insensitive) or mint"},
                "tokenOut": {"type": "string"},
                "amount": {
                    "description": "in units of tokenIn, > 0, at most the token's decimals",
                    "oneOf": [{"type": "number", "exclusiveMinimum": 0}, DECIMAL],
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
                    "oneOf": [{"type": "number", "exclusiveMinimum": 0}, DECIMAL],
                },
                "expiresIn": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "limit and sniper: seconds from now, at most "
                    "orders.max_expiry_s (7 days by default); without it nor expiresAt, "
                    "orders.default_expiry_s (400 invalid_expiry)",
                },
                "expiresAt": {
                    **TIME_VALUE,
                    "description": "limit and sniper, instead of expiresIn: epoch seconds or "
                    "ISO 8601 with a timezone, in the future and at most orders.max_expiry_s "
                    "away (400 invalid_expiry; both given: invalid_expiry naming the second)",
                },
                "minLiquidity": {
                    "description": "sniper: the least depth of the new pool, in units of "
                    "tokenIn, at most its decimals (400 invalid_min_liquidity)",
                    "oneOf": [{"type": "number", "exclusiveMinimum": 0}, DECIMAL],
                },
            },
        ),
        "description": "A field of another order type (limitPrice on a market order, "
        "minLiquidity on a limit order) is 400 field_not_allowed naming it; unknown fields "
        "are 400 unknown_field, its message naming every one.",
    },
    "OrderAccepted": obj(
        ["orderId", "status", "message", "websocketUrl"],
        {
            "orderId": {"type": "string", "format": "uuid"},
            "status": STATUS,
            "message": {"type": "string"},
            "websocketUrl": {
                "type": "string",
                "description": "path of the order's status stream (WebSocket)",
                "examples": ["/api/order/status?orderId=cfe19bbb-ed76-4082-929d-3574876c98ff"],
            },
        },
    ),
    "Error": obj(["error"], {"error": ERROR_BODY}),
    "Order": obj(
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
            "amount": DECIMAL,
            "slippageBps": {"type": "integer"},
            "status": STATUS,
            "attempts": {"type": "integer", "minimum": 0},
            "dex": {"oneOf": [DEX, {"type": "null"}]},
            "txHash": {"type": ["string", "null"]},
            "executedPrice": {"type": ["number", "null"]},
            "amountOut": {"oneOf": [DECIMAL, {"type": "null"}]},
            "minAmountOut": {"oneOf": [DECIMAL, {"type": "null"}]},
            "error": {"oneOf": [ERROR_BODY, {"type": "null"}]},
            "clientOrderId": {"type": ["string", "null"]},
            "createdAt": {"type": "number"},
            "updatedAt": {"type": "number"},
            "orderType": {"type": "string", "enum": [t.value for t in OrderType]},
            "limitPrice": {"oneOf": [DECIMAL, {"type": "null"}]},
            "expiresAt": {"type": ["number", "null"], "description": "epoch seconds"},
            "minLiquidity": {
                "oneOf": [DECIMAL, {"type": "null"}],
                "description": "sniper: in units of tokenIn",
            },
        },
    ),
    "Stats": obj(
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
            "openOrders": obj(
                ["limit", "sniper"],
                {
                    "limit": {"type": "integer", "minimum": 0},
                    "sniper": {"type": "integer", "minimum": 0},
                },
            ),
            "byStatus": obj(
                [status.value for status in Status],
                {status.value: {"type": "integer", "minimum": 0} for status in Status},
            ),
        },
    ),
    "OrderPage": obj(
        ["orders", "nextCursor"],
        {
            "orders": {"type": "array", "items": ref("Order")},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "pass as `cursor` for the next (older) page; null on the last",
            },
        },
    ),
    "StreamWarning": obj(
        ["warning"],
        {
            "warning": obj(
                ["code", "message"], {"code": {"const": "lagged"}, "message": {"type": "string"}}
            )
        },
    ),
    "OrderDetail": obj(
        ["order", "events"],
        {"order": ref("Order"), "events": {"type": "array", "items": ref("OrderEvent")}},
    ),
    "OrderEvent": {"oneOf": [ref(name) for name in _EVENT_NAMES]},
    **_EVENT_SCHEMAS,
    "VenuePrice": obj(
        ["dex", "price", "slot", "ts"],
        {
            "dex": DEX,
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
    "PairPrices": obj(
        ["pair", "tokenIn", "tokenOut", "base", "quote", "amountIn", "prices"],
        {
            "pair": {"type": "string", "examples": ["SOL→USDC"]},
            "tokenIn": {"type": "string"},
            "tokenOut": {"type": "string"},
            "base": {"type": "string", "description": "the token priced"},
            "quote": {"type": "string", "description": "the token it is priced in"},
            "amountIn": {**DECIMAL, "description": "the reference trade, in tokenIn"},
            "prices": {"type": "array", "items": ref("VenuePrice")},
        },
    ),
    "MarketPrices": obj(
        ["slot", "ts", "pairs"],
        {
            "slot": {"type": "integer", "minimum": 0, "description": "the streamed view's slot"},
            "ts": {"type": "number", "description": "unix seconds"},
            "pairs": {"type": "array", "items": ref("PairPrices")},
        },
    ),
    **SESSION_SCHEMAS,
    "TokenList": TOKEN_LIST_SCHEMA,
    "Health": obj(
        ["status"],
        {"status": {"type": "string"}, "store": {"type": "string"}, "hub": {"type": "string"}},
    ),
}

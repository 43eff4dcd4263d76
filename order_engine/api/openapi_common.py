"""The OpenAPI document's building blocks, shared by the modules that describe its paths and
schemas: common value schemas, `$ref`s, objects, parameters and error responses."""

from __future__ import annotations

from typing import Any

from order_engine.orders import Status

DECIMAL = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["1.5"]}
DEX = {"type": "string", "enum": ["Raydium", "Meteora"]}
STATUS = {"type": "string", "enum": [status.value for status in Status]}
ERROR_BODY = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
        "status": {**STATUS, "description": "not_cancellable: the order's current status"},
        "retryAfter": {
            "type": "integer",
            "minimum": 1,
            "description": "trading session: seconds to wait before asking again, where HTTP "
            "would send Retry-After (rate_limited, too_many_orders, queue full, ...)",
        },
    },
    "additionalProperties": False,
}
ORDER_ID_PATH = {
    "name": "orderId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
TIME_VALUE = {
    "oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "format": "date-time"}]
}
UUID = {"type": "string", "format": "uuid"}
SEQ = {"type": "integer", "minimum": 0}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def json_response(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def error_responses(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid input (field-level code; `invalid_text`: NUL or text that is not UTF-8); "
        "on a WebSocket path, not an Upgrade request, an API key that is not UTF-8 text, or "
        "a `key.` subprotocol offered without `order-engine`, or a handshake header missing or "
        "bad (`missing_header`/`invalid_header`, `field` names it); `bad_request`: HTTP the "
        "server could not parse (431 `headers_too_large` for an over-long line or too many "
        "headers)",
        401: "a valid API key is required (when authentication is on; see ApiKey)",
        404: "no such order (or another client's)",
        408: "the request body, or its headers (`request_timeout`), did not arrive in time",
        409: "the same Idempotency-Key is still in progress, or clientOrderId is taken",
        413: "body too large",
        415: "Content-Type is not application/json",
        422: "Idempotency-Key reused with a different body",
        429: "rate limit (per key; per address without a valid key, wrong keys included) "
        "or WebSocket cap reached, or `too_many_connections` from one address (see Retry-After)",
        503: "queue full, shutting down, storage unavailable, or `server_busy`: the server holds "
        "its most connections (see Retry-After)",
    }
    return {str(c): json_response("Error", text[c]) for c in codes}

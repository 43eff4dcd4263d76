"""The trading session in the OpenAPI document (GET /api/session): its messages, both ways,
and the path."""

from __future__ import annotations

from typing import Any

from order_engine.api.openapi_common import ERROR_BODY, error_responses, obj, ref

_SESSION_ID = {
    "type": ["string", "number", "boolean", "null"],
    "description": "the client's, any JSON scalar: echoed exactly in the reply",
}
_SESSION_ORDER_ID = {"type": "string", "format": "uuid"}


def _session_request(op: str, required: list[str], fields: dict[str, Any]) -> dict[str, Any]:
    return obj(["id", "op", *required], {"id": _SESSION_ID, "op": {"const": op}, **fields})


# The trading session's messages (GET /api/session).
SESSION_SCHEMAS: dict[str, Any] = {
    "SessionRequest": {
        "oneOf": [ref("SessionSubmit"), ref("SessionCancel"), ref("SessionWatch")],
        "description": "One JSON text frame. A field an op does not take is unknown_field.",
    },
    "SessionSubmit": _session_request(
        "submit",
        ["order"],
        {
            "order": ref("OrderRequest"),
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
            ref("SessionResult"),
            ref("SessionRefusal"),
            ref("SessionEvent"),
            ref("Error"),
        ],
        "description": "A reply by id (result or error), an event of a followed order, or "
        "the session's last word before the server closes it (an Error without id).",
    },
    "SessionResult": obj(
        ["id", "result"],
        {
            "id": _SESSION_ID,
            "result": {
                "oneOf": [ref("OrderAccepted"), ref("Order"), ref("SessionWatching")],
                "description": "submit: as POST /api/order/execute answers (201 or, replayed "
                "by its idempotencyKey, 200); cancel: the order as DELETE answers it; watch: "
                "what is followed",
            },
        },
    ),
    "SessionWatching": obj(
        ["orderId", "after"],
        {"orderId": _SESSION_ORDER_ID, "after": {"type": "integer", "minimum": 0}},
    ),
    "SessionRefusal": obj(["id", "error"], {"id": _SESSION_ID, "error": ERROR_BODY}),
    "SessionEvent": obj(
        ["event"],
        {"event": {**ref("OrderEvent"), "description": "as /api/order/status sends it"}},
    ),
}

SESSION_PATH: dict[str, Any] = {
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
        "x-websocket": {"send": ref("SessionRequest"), "receive": ref("SessionMessage")},
        "responses": {
            "101": {"description": "switching to WebSocket"},
            **error_responses(400, 401, 429),
        },
    }
}

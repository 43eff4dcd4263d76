"""The WebSocket streams in the OpenAPI document (all but the trading session's): an order
submitted and streamed on one connection, an order's status stream, the firehose of every
order's events, and live market prices."""

from __future__ import annotations

from typing import Any

from order_engine.api.openapi_common import SEQ, UUID, error_responses, query_param, ref

_WS_NOTE = (
    "WebSocket upgrade. Messages are OrderEvent objects in seq order (history, then live); "
    "the server closes with 1000 after the terminal event. A malformed request gets one "
    "Error message then close 1008; an unknown order, Error then 4404."
)

EXECUTE_WEBSOCKET: dict[str, Any] = {
    "summary": "Submit an order over a WebSocket and stream it on the same connection",
    "operationId": "executeOrderWebSocket",
    "description": "WebSocket upgrade. The client's first message is an OrderRequest; "
    "the server answers OrderAccepted (or Error then close 1008), then streams the "
    "order's OrderEvent messages and closes with 1000 after the terminal one. With "
    "`orderId` (and optionally `after`) in the query, it serves that order's status "
    "stream instead, exactly as /api/order/status does (to reconnect where one "
    "submitted).",
    "parameters": [
        query_param("orderId", "stream this order instead of taking one", UUID),
        query_param("after", "with orderId: only events with a greater seq", SEQ),
    ],
    "x-websocket": {
        "send": ref("OrderRequest"),
        "receive": {"oneOf": [ref("OrderAccepted"), ref("OrderEvent"), ref("Error")]},
    },
    "responses": {
        "101": {"description": "switching to WebSocket"},
        **error_responses(400, 401, 429),
    },
}

STATUS_PATH: dict[str, Any] = {
    "get": {
        "summary": "Stream an order's events",
        "operationId": "orderStatusWebSocket",
        "description": _WS_NOTE,
        "parameters": [
            {"name": "orderId", "in": "query", "required": True, "schema": UUID},
            query_param("after", "resume: only events with a greater seq", SEQ),
        ],
        "x-websocket": {"receive": {"oneOf": [ref("OrderEvent"), ref("Error")]}},
        "responses": {
            "101": {"description": "switching to WebSocket"},
            **error_responses(400, 401, 429),
        },
    }
}

FIREHOSE_PATH: dict[str, Any] = {
    "get": {
        "summary": "Firehose: every event of every order, live",
        "operationId": "ordersStreamWebSocket",
        "description": "WebSocket upgrade. OrderEvent messages of all orders as they "
        "happen (optionally filtered); a client too slow for the stream gets a "
        "StreamWarning (`lagged`) for what was dropped, one that stops reading is "
        "disconnected. Invalid filters: one Error message, then close 1008.",
        "parameters": [
            query_param("status", "only these statuses, comma-separated", {"type": "string"}),
            query_param("tokenIn", "only orders selling this token", {"type": "string"}),
            query_param("tokenOut", "only orders buying this token", {"type": "string"}),
        ],
        "x-websocket": {
            "receive": {"oneOf": [ref("OrderEvent"), ref("StreamWarning"), ref("Error")]}
        },
        "responses": {
            "101": {"description": "switching to WebSocket"},
            **error_responses(400, 401, 429),
        },
    }
}

MARKET_STREAM_PATH: dict[str, Any] = {
    "get": {
        "summary": "Live venue prices: every pair, then the pairs that change",
        "operationId": "marketStreamWebSocket",
        "description": "WebSocket upgrade. The first MarketPrices message has every pair "
        "(as GET /api/market); each later one only the pairs whose price changed since "
        "the last, at most four a second (changes in between are coalesced). A client "
        "that stops reading is disconnected. With market data off or behind the chain: "
        "one Error message (`market_data_off`, `market_data_stale`), then close 1013.",
        "x-websocket": {"receive": {"oneOf": [ref("MarketPrices"), ref("Error")]}},
        "responses": {
            "101": {"description": "switching to WebSocket"},
            **error_responses(400, 401, 429),
        },
    }
}

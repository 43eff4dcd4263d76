"""The orders' HTTP paths in the OpenAPI document: submit, look up, cancel, and the history."""

from __future__ import annotations

from typing import Any

from order_engine.api.openapi_common import (
    ORDER_ID_PATH,
    TIME_VALUE,
    error_responses,
    json_response,
    query_param,
    ref,
)

SUBMIT: dict[str, Any] = {
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
        "content": {"application/json": {"schema": ref("OrderRequest")}},
    },
    "responses": {
        "201": json_response("OrderAccepted", "stored and queued (limit, sniper: then armed)"),
        "200": json_response("OrderAccepted", "replay of an earlier request with the same key"),
        **error_responses(400, 401, 408, 409, 413, 415, 422, 429, 503),
    },
}

GET_ORDER: dict[str, Any] = {
    "summary": "An order and all its events",
    "operationId": "getOrder",
    "parameters": [ORDER_ID_PATH],
    "responses": {
        "200": json_response("OrderDetail", "the order"),
        **error_responses(400, 401, 404, 429, 503),
    },
}

CANCEL_ORDER: dict[str, Any] = {
    "summary": "Cancel a pending or open order",
    "operationId": "cancelOrder",
    "description": "Cancels an order that is pending or open (armed): its stream ends with "
    "a `cancelled` event. Once its execution began (routing and after) or it finished, the "
    "answer is 409 `not_cancellable` with the order's status in `error.status`.",
    "parameters": [ORDER_ID_PATH],
    "responses": {
        "200": json_response("Order", "cancelled: the order, status `cancelled`"),
        "409": json_response(
            "Error", "not_cancellable: too late, `error.status` is the order's status"
        ),
        **error_responses(400, 401, 404, 429, 503),
    },
}

HISTORY_PATH: dict[str, Any] = {
    "get": {
        "summary": "Order history: filters, newest first, cursor pages",
        "operationId": "listOrders",
        "description": "Pages stay stable while new orders arrive (keyset on creation "
        "time and id). With authentication on, only the caller's orders.",
        "parameters": [
            query_param("status", "one or more statuses, comma-separated", {"type": "string"}),
            query_param("tokenIn", "symbol or mint", {"type": "string"}),
            query_param("tokenOut", "symbol or mint", {"type": "string"}),
            query_param("from", "created at or after: epoch seconds or ISO 8601", TIME_VALUE),
            query_param("to", "created before: epoch seconds or ISO 8601", TIME_VALUE),
            query_param(
                "limit",
                "page size (default 50)",
                {"type": "integer", "minimum": 1, "maximum": 500},
            ),
            query_param("cursor", "nextCursor of the previous page", {"type": "string"}),
        ],
        "responses": {
            "200": json_response("OrderPage", "a page of orders"),
            **error_responses(400, 401, 429),
        },
    }
}

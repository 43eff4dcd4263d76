"""The OpenAPI 3.1 document: every endpoint and every message, checked against real responses
by the tests (its schemas are JSON Schema 2020-12).

This module assembles it: every path, in the document's order, from the modules that describe
each area (openapi_orders, openapi_streams, openapi_session, openapi_service, and the tokens
endpoint), and the component schemas (openapi_schemas)."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from order_engine import __version__
from order_engine.api.openapi_orders import CANCEL_ORDER, GET_ORDER, HISTORY_PATH, SUBMIT
from order_engine.api.openapi_schemas import SCHEMAS
from order_engine.api.openapi_service import (
    ASSET_PATH,
    DASHBOARD_PATH,
    HEALTHZ_PATH,
    MARKET_PATH,
    METRICS_PATH,
    OPENAPI_PATH,
    READYZ_PATH,
    STATS_PATH,
)
from order_engine.api.openapi_session import SESSION_PATH
from order_engine.api.openapi_streams import (
    EXECUTE_WEBSOCKET,
    FIREHOSE_PATH,
    MARKET_STREAM_PATH,
    STATUS_PATH,
)
from order_engine.api.tokens import TOKENS_PATH

_PATHS: dict[str, Any] = {
    "/api/order/execute": {"post": SUBMIT},
    "/api/orders/execute": {
        "post": {**SUBMIT, "operationId": "executeOrderAlias"},
        "get": EXECUTE_WEBSOCKET,
    },
    "/api/order/status": STATUS_PATH,
    "/api/order/{orderId}": {"get": GET_ORDER, "delete": CANCEL_ORDER},
    "/api/orders/{orderId}": {
        "get": {**GET_ORDER, "operationId": "getOrderAlias"},
        "delete": {**CANCEL_ORDER, "operationId": "cancelOrderAlias"},
    },
    "/api/tokens": TOKENS_PATH,
    "/api/stats": STATS_PATH,
    "/api/orders": HISTORY_PATH,
    "/api/orders/stream": FIREHOSE_PATH,
    "/api/session": SESSION_PATH,
    "/api/market": MARKET_PATH,
    "/api/market/stream": MARKET_STREAM_PATH,
    "/": DASHBOARD_PATH,
    "/static/{name}": ASSET_PATH,
    "/metrics": METRICS_PATH,
    "/healthz": HEALTHZ_PATH,
    "/readyz": READYZ_PATH,
    "/api/openapi.json": OPENAPI_PATH,
}


_KEY_NOTE = (
    "When authentication is on. A browser's WebSocket, which cannot set headers, offers the "
    "subprotocols `order-engine` and `key.<key>`; the server answers `order-engine`. The "
    "`apiKey` query parameter still works on WebSockets but is discouraged: proxies log URLs. "
    "Requests without a valid key are rate limited by address, those with one by key."
)


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
        # checks needs the key.
        "security": [{"ApiKey": []}, {}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "ApiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": _KEY_NOTE,
                }
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    return copy.deepcopy(_document())
